"""What the queue manager expects of a delivery agent (local Maildir, SMTP relay, ...)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from dovetail.queue.envelope import QueueRecipient
from dovetail.queue.qfile import QueuedMessage

DeliveryStatus = Literal["sent", "deferred", "bounced"]


@dataclass(frozen=True)
class DeliveryResult:
    """The outcome for one recipient: ``dsn_code`` like "2.0.0", ``reason`` the reply text."""

    recipient: QueueRecipient
    status: DeliveryStatus
    dsn_code: str
    reason: str
    relay: str | None = None


class DeliveryAgent(Protocol):
    """``deliver`` gets the message (read it with ``message.open()``) and the recipients it should
    handle, and returns one result per recipient. It must not raise for per-recipient problems;
    an exception defers every recipient of the call."""

    async def deliver(
        self, message: QueuedMessage, recipients: list[QueueRecipient]
    ) -> list[DeliveryResult]: ...
