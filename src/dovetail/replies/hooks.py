"""How the rest of Dovetail reaches the replies engine, built once per process from the engine and config.

Outbound registers what it sends and reports delivery results through ``outbound_hooks`` /
``outbound_events``; the queue manager hands each message delivered to a reply inbox to
``local_delivery``. Each returns plain callables or objects of the protocols outbound defines.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from dovetail.datadir import Layout
from dovetail.log import get_logger

from .outbound_bridge import OutboundBridge
from .service import RepliesService
from .sources.local import LocalHook

log = get_logger("replies")


def outbound_hooks(engine: Any, cfg: Any) -> tuple[OutboundBridge, OutboundBridge]:
    """(campaign registry, suppression list) for the send API."""
    bridge = OutboundBridge(RepliesService.open(engine, cfg.data_dir))
    return bridge, bridge


def outbound_events(engine: Any, cfg: Any) -> OutboundBridge:
    """The event sink of the relay/MX agent: relay ids into the registry, hard bounces suppressed."""
    return OutboundBridge(RepliesService.open(engine, cfg.data_dir))


def local_delivery(engine: Any, cfg: Any) -> Callable[[str, str, Path, str, str], None]:
    """``hand_over(tenant, mailbox_address, maildir, key, folder)`` for a message just delivered (``key``
    as the storage's ``Delivered.key``, ``folder`` INBOX or Junk); reply inboxes and the tenants'
    replies intakes only."""
    hook = LocalHook(RepliesService.open(engine, cfg.data_dir), mail_root=Layout(cfg.data_dir).mail)

    def hand_over(tenant: str, mailbox_address: str, maildir: Path, key: str, folder: str = "INBOX") -> None:
        if not hook.wants(tenant, mailbox_address, maildir):
            return
        try:
            hook.on_delivered(tenant, mailbox_address, maildir, key, folder)
        except Exception as exc:  # noqa: BLE001 - delivery stands; the IMAP source or a replay catches up
            log.warning("reply pipeline failed for a delivered message", mailbox=mailbox_address,
                        file=key, error=repr(exc))

    return hand_over
