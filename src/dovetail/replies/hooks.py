"""How the rest of Dovetail reaches the replies engine, built once per process from the engine and config.

Outbound registers what it sends and reports delivery results through ``outbound_hooks`` /
``outbound_events``; the queue manager hands each message delivered to a reply inbox to
``local_delivery``. Each returns plain callables or objects of the protocols outbound defines.
"""

from __future__ import annotations

from typing import Any

from dovetail.datadir import Layout
from dovetail.log import get_logger

from .handover import HandOver
from .outbound_bridge import OutboundBridge
from .service import RepliesService
from .sources.local import LocalHook
from .wake import WakeSender, wake_path

log = get_logger("replies")


def outbound_hooks(engine: Any, cfg: Any) -> tuple[OutboundBridge, OutboundBridge]:
    """(campaign registry, suppression list) for the send API."""
    bridge = OutboundBridge(RepliesService.open(engine, cfg.data_dir))
    return bridge, bridge


def outbound_events(engine: Any, cfg: Any) -> OutboundBridge:
    """The event sink of the relay/MX agent: relay ids into the registry, hard bounces suppressed."""
    return OutboundBridge(RepliesService.open(engine, cfg.data_dir))


def local_delivery(engine: Any, cfg: Any) -> HandOver:
    """The hand-over of messages just delivered (reply inboxes and the tenants' replies intakes only),
    committed in batches; it wakes the replies service's dispatcher through ``run/replies.wake``."""
    layout = Layout(cfg.data_dir)
    hook = LocalHook(RepliesService.open(engine, cfg.data_dir), mail_root=layout.mail)
    return HandOver(hook, wake=WakeSender(wake_path(layout.run)))
