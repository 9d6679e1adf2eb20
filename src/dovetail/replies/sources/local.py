"""The local source: Dovetail mailboxes marked as reply inboxes hand each delivered message over.

Each tenant also has a replies intake, ``mail/<tenant>/_replies/``, where the directory routes
``reply+<token>@`` and ``unsubscribe+<token>@`` of its domains (see ``directory.resolve``); it is
consumed as a reply inbox without being marked, so reply tracking needs no setup.

The delivery agent calls :meth:`LocalHook.on_delivered` after storing a message in a mailbox; no
polling. The message is read back through the storage API by the key delivery gave it (the Maildir
file name without its ``:2,`` flags), which is also the source position, so a delivery retried
after a crash, or the same message seen again, is processed once.
"""

from __future__ import annotations

import time
from pathlib import Path

import sqlalchemy as sa

from dovetail.directory import Directory, lookups
from dovetail.directory.addresses import AddressError, normalize_address, normalize_tenant
from dovetail.directory.resolve import replies_intake_maildir
from dovetail.log import get_logger
from dovetail.storage import open_storage

from ..pipeline import ReplyRecord, Source
from ..registry import RegistryError, tenant_id
from ..schema import reply_inboxes
from ..service import RepliesService

log = get_logger("replies")

MAX_MESSAGE_BYTES = 50 * 1024 * 1024


def _inbox(address: str) -> str:
    """An address as reply inboxes are stored (what :meth:`LocalHook.mark` keeps)."""
    try:
        return normalize_address(address)
    except AddressError:
        return address.strip().lower()


class LocalHook:
    def __init__(self, service: RepliesService, cache_ttl: float = 2.0, mail_root: Path | None = None) -> None:
        """``mail_root`` (the data directory's ``mail/``) lets the hook recognise the tenants' replies intakes."""
        self.service = service
        self.engine = service.engine
        self.cache_ttl = cache_ttl
        self.mail_root = mail_root
        self._cache: tuple[float, set[tuple[str, str]]] | None = None

    # --- which mailboxes are reply inboxes -------------------------------------------------------

    def mark(self, tenant: str, address: str) -> None:
        try:
            address = normalize_address(address)  # as deliveries name it: A-label domain, lowercase
        except AddressError:
            raise RegistryError(f"not an address: {address!r}") from None
        with self.engine.begin() as conn:
            tid = tenant_id(conn, tenant)
            if not conn.execute(sa.select(reply_inboxes.c.id).where(reply_inboxes.c.address == address)).first():
                conn.execute(reply_inboxes.insert().values(tenant_id=tid, address=address))
        self._cache = None

    def add_inbox(self, tenant: str | None, address: str) -> tuple[str, str]:
        """Make the mailbox ``address`` a reply inbox (``replies inbox add``); it must be a mailbox of
        ``tenant`` (None: of whichever tenant owns it). Returns (tenant, address) as stored."""
        owner = Directory(self.engine).mailbox_owner(address)
        if owner is None or (tenant is not None and owner.tenant != normalize_tenant(tenant)):
            raise RegistryError(f"{address} is not a mailbox" + (f" of tenant {tenant}" if tenant else ""))
        self.mark(owner.tenant, owner.address)
        return owner.tenant, owner.address

    def listing(self, tenant: str | None = None) -> list[dict[str, str]]:
        """Reply inboxes as (tenant, address) rows, of one tenant or of all."""
        tenant_name = lookups.tenant_name_of(reply_inboxes.c.tenant_id)
        query = sa.select(tenant_name.label("tenant"), reply_inboxes.c.address).order_by(tenant_name,
                                                                                        reply_inboxes.c.address)
        with self.engine.connect() as conn:
            if tenant is not None:
                query = query.where(reply_inboxes.c.tenant_id == tenant_id(conn, tenant))
            return [{"tenant": r.tenant, "address": r.address} for r in conn.execute(query)]

    def unmark(self, tenant: str, address: str) -> bool:
        with self.engine.begin() as conn:
            tid = tenant_id(conn, tenant)
            done = conn.execute(reply_inboxes.delete().where(reply_inboxes.c.tenant_id == tid,
                                                             reply_inboxes.c.address == _inbox(address)))
        self._cache = None
        return done.rowcount > 0

    def inboxes(self, tenant: str) -> list[str]:
        with self.engine.connect() as conn:
            tid = tenant_id(conn, tenant)
            return list(conn.execute(sa.select(reply_inboxes.c.address).where(reply_inboxes.c.tenant_id == tid)
                                     .order_by(reply_inboxes.c.address)).scalars())

    def is_intake(self, tenant: str, maildir: Path | str) -> bool:
        """Whether ``maildir`` is the replies intake of ``tenant`` (and of no other tenant)."""
        return self.mail_root is not None and Path(maildir) == replies_intake_maildir(
            self.mail_root, normalize_tenant(tenant))

    def wants(self, tenant: str, mailbox_address: str, maildir: Path | str | None = None) -> bool:
        """Whether deliveries to this mailbox go to the pipeline (cached briefly: called per delivery)."""
        if maildir is not None and self.is_intake(tenant, maildir):
            return True
        now = time.monotonic()
        if self._cache is None or now - self._cache[0] > self.cache_ttl:
            with self.engine.connect() as conn:
                rows = conn.execute(sa.select(lookups.tenant_name_of(reply_inboxes.c.tenant_id).label("tenant"),
                                              reply_inboxes.c.address)).all()
            self._cache = (now, {(r.tenant, r.address) for r in rows})
        return (normalize_tenant(tenant), _inbox(mailbox_address)) in self._cache[1]

    # --- the hook ----------------------------------------------------------------------------------

    def on_delivered(self, tenant: str, mailbox_address: str, maildir_path: Path | str,
                     filename: str, folder: str = "INBOX") -> ReplyRecord | None:
        """Process a message just delivered to a Maildir; ``None`` if the mailbox is not a reply inbox."""
        if not self.wants(tenant, mailbox_address, maildir_path):
            return None
        loaded = self.load(tenant, mailbox_address, maildir_path, filename, folder)
        return None if loaded is None else self.service.process_message(*loaded)

    def load(self, tenant: str, mailbox_address: str, maildir_path: Path | str,
             filename: str, folder: str = "INBOX") -> tuple[bytes, Source] | None:
        """The delivered message and its source position, read back through the storage API; None when
        it is gone. ``filename`` must be a name inside the Maildir: no path leads elsewhere."""
        name = Path(filename).name
        if not name or name.startswith("."):
            raise ValueError(f"not a Maildir file name: {filename!r}")
        base = name.split(":", 1)[0]
        raw = open_storage(maildir_path, create=False).read_delivered(base, folder, limit=MAX_MESSAGE_BYTES + 1)
        if raw is None:
            log.warning("delivered message vanished", mailbox=mailbox_address, file=name)
            return None
        return raw, Source(tenant, f"local:{mailbox_address.lower()}", item=base, folder=folder)


def delivered_file(hook: LocalHook, mail_root: Path, mailbox_address: str, message_path: Path | str
                   ) -> ReplyRecord | None:
    """Call the hook for a file the delivery agent just wrote under ``mail/<tenant>/<domain>/<local>/``."""
    path = Path(message_path)
    maildir = path.parent.parent  # .../<local>/new/<file>
    try:
        tenant = maildir.relative_to(mail_root).parts[0]
    except (ValueError, IndexError):
        raise ValueError(f"{path} is not inside {mail_root}") from None
    return hook.on_delivered(tenant, mailbox_address, maildir, path.name)

