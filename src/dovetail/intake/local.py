"""The directory as the delivery side sees it: address → Maildir targets or a rejection, and its transport."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable

from ..delivery.agent import MailboxTarget, Rejection
from ..directory import Resolver
from ..directory.nodes import NodeStore
from ..directory.resolve import Resolution

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
        if any(m.paused for m in res.mailboxes):  # a move's final sync: the queue keeps it meanwhile
            return Rejection("mailbox is moving to another node", "4.2.0")
        return [MailboxTarget(address=m.address, maildir=m.maildir, quota_bytes=m.quota_bytes or None,
                              detail=m.detail) for m in res.mailboxes]

    return resolve


class HomeNodes:
    """Where a recipient's mailboxes live in a cluster: the LMTP address of their home node when that is
    another node (``node.name`` says which one is this), else None (delivered here).

    A recipient goes over LMTP only when all its mailboxes are homed on one other node, which is the case
    for every address of a tenant (tenants are placed whole). An alias whose targets live on different
    nodes is delivered here, as on a single installation. The node list is read at most once a
    ``ttl``; placement changes reach the resolver's cache through the directory generation.
    """

    def __init__(self, resolver: Resolver, nodes: NodeStore, here: str, ttl: float = 1.0) -> None:
        self.resolver = resolver
        self.nodes = nodes
        self.here = here.strip().lower()
        self.ttl = ttl
        self._cache: tuple[float, dict[str, str]] | None = None
        self._refreshing = threading.Lock()

    def stale(self) -> bool:
        """Whether the next lookup would read the node list (callers on an event loop refresh in a thread)."""
        return bool(self.here) and (self._cache is None or time.monotonic() - self._cache[0] > self.ttl)

    def refresh(self) -> None:
        """Read the node list now (blocking: a database query). One thread at a time: while one reads
        it, the others go on with the list they have (a delivery burst would otherwise send every
        worker thread to the database in the same instant)."""
        cache = self._cache
        if not self._refreshing.acquire(blocking=cache is None):
            return
        try:
            if self._cache is cache or self._cache is None:  # nobody read it while this thread waited
                self._cache = (time.monotonic(), {n.name: n.lmtp for n in self.nodes.list() if n.lmtp})
        finally:
            self._refreshing.release()

    def _addresses(self) -> dict[str, str]:
        if self._cache is None or time.monotonic() - self._cache[0] > self.ttl:
            self.refresh()
        assert self._cache is not None
        return self._cache[1]

    def address_of(self, res: Resolution) -> str | None:
        """The LMTP ``host:port`` of the one other node all of ``res``'s mailboxes are homed on, or None."""
        if not self.here or not res.ok or not res.mailboxes or res.external:
            return None
        homes = {m.node for m in res.mailboxes}
        if len(homes) != 1:
            return None
        home = homes.pop()
        if home is None or home == self.here:
            return None
        return self._addresses().get(home)

    def lmtp_for(self, address: str) -> str | None:
        """The same for an address (blocking on a cache miss: the queue asked moments before, so a hit)."""
        res = self.resolver.cached(address)
        return self.address_of(res if res is not None else self.resolver.resolve(address))


def transport_chooser(resolver: Resolver, lmtp_for: Callable[[str], object | None] | None = None,
                      home: HomeNodes | None = None) -> Callable[[str], Awaitable[str]]:
    """qmgr's ``transport_for``: a recipient with an lmtp transport rule, or homed on another node of the
    cluster, goes to the LMTP agent (``lmtp``), our domains to the Maildir agent (``virtual``), the rest
    out by ``smtp``.

    Called on qmgr's event loop for every recipient: a cached resolution answers at once; a miss is a
    database query, made in a thread so that the loop keeps delivering meanwhile.
    """

    async def transport_for(address: str) -> str:
        if lmtp_for is not None and lmtp_for(address) is not None:
            return "lmtp"
        res = resolver.cached(address)
        if res is None:
            res = await asyncio.to_thread(resolver.resolve, address)
        if home is not None:
            if home.stale():
                await asyncio.to_thread(home.refresh)  # the node list is a query: not on the loop
            if home.address_of(res) is not None:
                return "lmtp"
        return "smtp" if res.status == "not_local" else "virtual"

    return transport_for
