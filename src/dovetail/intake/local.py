"""The directory as the delivery side sees it: address → Maildir targets or a rejection, and its transport."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from ..delivery.agent import MailboxTarget, Rejection
from ..directory import Resolver

_REJECT = {
    "unknown": ("user unknown", "5.1.1"),
    "not_local": ("not a local domain", "5.1.2"),
    "disabled": ("mailbox disabled", "5.2.1"),
    "loop": ("alias loop", "5.4.6"),
    "invalid": ("bad address syntax", "5.1.3"),
}


def mailbox_targets(resolver: Resolver):  # noqa: ANN201 - returns the delivery agent's Resolver callable
    """Adapt the directory resolver to ``MaildirDeliveryAgent``'s resolve callable."""

    def resolve(address: str) -> list[MailboxTarget] | Rejection:
        res = resolver.resolve(address)
        if not res.ok:
            reason, code = _REJECT.get(res.status, ("user unknown", "5.1.1"))
            return Rejection(f"{reason}: {res.reason}" if res.reason else reason, code)
        if not res.mailboxes:
            return Rejection("no local mailbox for this address", "5.1.1")
        return [MailboxTarget(address=m.address, maildir=m.maildir, quota_bytes=m.quota_bytes or None,
                              detail=m.detail) for m in res.mailboxes]

    return resolve


def transport_chooser(resolver: Resolver, lmtp_for: Callable[[str], object | None] | None = None,
                      ) -> Callable[[str], Awaitable[str]]:
    """qmgr's ``transport_for``: a recipient with an lmtp transport rule goes to the LMTP agent (``lmtp``),
    our domains to the Maildir agent (``virtual``), the rest out by ``smtp``.

    Called on qmgr's event loop for every recipient: a cached resolution answers at once; a miss is a
    database query, made in a thread so that the loop keeps delivering meanwhile.
    """

    async def transport_for(address: str) -> str:
        if lmtp_for is not None and lmtp_for(address) is not None:
            return "lmtp"
        res = resolver.cached(address)
        if res is None:
            res = await asyncio.to_thread(resolver.resolve, address)
        return "smtp" if res.status == "not_local" else "virtual"

    return transport_for
