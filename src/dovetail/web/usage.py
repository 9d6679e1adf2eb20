"""What a mailbox holds, wherever its Maildir lives.

On a single installation, and for tenants homed on this node, the Maildir is here and is counted here.
In a cluster a tenant's mail lives on its home node only, so the API and the pages of any other node ask
that node's transfer endpoint (``GET /cluster/v1/tenants/{tenant}/usage``, one request per tenant per
page); when it cannot be reached the figures are unknown (``null``), never a false zero.
"""

from __future__ import annotations

from typing import Any

from ..directory.nodes import NodeStore
from ..log import get_logger
from ..move.mover import TransferClient, Unreachable
from ..storage import open_storage
from .context import WebContext

REMOTE_TIMEOUT = 5.0


class MailboxUsage:
    """Usage figures for the mailboxes of one response; remote tenants are asked once each."""

    def __init__(self, ctx: WebContext) -> None:
        self.ctx = ctx
        self.here = str(ctx.cfg["node.name"] or "").strip().lower()
        self._homes: dict[str, str | None] = {}
        self._remote: dict[str, dict[str, Any] | None] = {}

    def _home(self, tenant: str) -> str | None:
        if tenant not in self._homes:
            row = self.ctx.directory.tenant_get(tenant)
            self._homes[tenant] = (row or {}).get("home_node")
        return self._homes[tenant]

    def _ask(self, tenant: str, home: str) -> dict[str, Any] | None:
        if tenant in self._remote:
            return self._remote[tenant]
        found: dict[str, Any] | None = None
        node = NodeStore(self.ctx.engine).get(home)
        secret = str(self.ctx.cfg["cluster.secret"] or "")
        if node is None or not node.transfer or not secret:
            get_logger("web").warning(f"usage of tenant {tenant}: home node {home} has no transfer address "
                                      "or cluster.secret is not set here; shown as unknown")
        else:
            client = TransferClient(node, secret, timeout=REMOTE_TIMEOUT)
            try:
                found = client.usage(tenant)
            except Unreachable as exc:
                get_logger("web").warning(f"usage of tenant {tenant}: {exc}; shown as unknown")
            finally:
                client.close()
        self._remote[tenant] = found
        return found

    def of(self, tenant: str, address: str) -> tuple[int | None, int | None]:
        """(bytes, messages) of ``address`` (``local@domain``, as the directory spells it) of ``tenant``."""
        home = self._home(tenant)
        if not home or home == self.here:
            local, _, dom = address.rpartition("@")
            used = open_storage(self.ctx.layout.maildir(tenant, dom, local), create=False).usage()
            return used.bytes, used.messages
        remote = self._ask(tenant, home)
        if remote is None:
            return None, None
        entry = remote.get(address) or {"bytes": 0, "messages": 0}  # no Maildir yet: nothing delivered
        return int(entry.get("bytes", 0)), int(entry.get("messages", 0))
