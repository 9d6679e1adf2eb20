"""The durable mail queue and its manager (Postfix's cleanup + qmgr)."""

from __future__ import annotations

from dovetail.queue.agent import DeliveryAgent, DeliveryResult, DeliveryStatus
from dovetail.queue.envelope import Envelope, QueueRecipient
from dovetail.queue.ids import is_queue_id, new_queue_id
from dovetail.queue.manager import QueueConfig, QueueManager
from dovetail.queue.qfile import CorruptQueueFile, QueuedMessage
from dovetail.queue.shard import Shard
from dovetail.queue.store import Queue, QueueEntry, QueueShow, QueueWriter

__all__ = [
    "CorruptQueueFile",
    "DeliveryAgent",
    "DeliveryResult",
    "DeliveryStatus",
    "Envelope",
    "Queue",
    "QueueConfig",
    "QueueEntry",
    "QueueManager",
    "QueueRecipient",
    "QueueShow",
    "QueueWriter",
    "QueuedMessage",
    "Shard",
    "is_queue_id",
    "new_queue_id",
]
