"""The IMAP source: follows one folder of any IMAP account and feeds each new message to the pipeline.

Messages are fetched by UID above a durable checkpoint (UIDVALIDITY, last UID) that advances after
each message is stored, so a restart resumes where it stopped and misses nothing. When the folder's
UIDVALIDITY changes the UIDs mean nothing any more: the folder is read again from the start, and the
pipeline's Message-ID key keeps that from emitting anything twice. Between syncs the session waits in
IDLE (re-issued before servers' 30-minute cut-off), or polls with NOOP where IDLE is missing; a
dropped connection is retried with exponential backoff.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import random
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from dovetail.dbrows import inserted_id
from dovetail.directory import lookups
from dovetail.directory.addresses import normalize_tenant
from dovetail.log import get_logger
from dovetail.sealing import Sealer, SealError

from ..dbretry import retry
from ..imapc.client import ImapClient, ImapError
from ..imapc.proto import ProtocolError
from ..pipeline import Source
from ..registry import RegistryError, tenant_id, utcnow
from ..schema import imap_accounts, imap_checkpoints
from ..service import RepliesService

log = get_logger("replies")
PASSWORD_PURPOSE = "imap source password"


@dataclass(frozen=True)
class ImapAccount:
    id: int
    tenant: str
    name: str
    host: str
    port: int
    tls: str
    username: str
    password: str
    folder: str = "INBOX"

    @property
    def source_name(self) -> str:
        return f"imap:{self.id}:{self.folder}"


class ImapAccounts:
    """The IMAP accounts each tenant has the engine follow, and their checkpoints."""

    def __init__(self, engine: Engine, sealer: Sealer | None = None) -> None:
        """With a ``sealer`` the passwords are sealed at rest (:mod:`dovetail.sealing`) and opened when
        read; an account whose password cannot be opened is left out, with a warning."""
        self.engine = engine
        self.sealer = sealer

    def add(self, tenant: str, name: str, *, host: str, port: int = 993, tls: str = "implicit", username: str,
            password: str, folder: str = "INBOX") -> ImapAccount:
        if tls not in ("implicit", "starttls", "none"):
            raise RegistryError("tls must be implicit, starttls or none")
        if not 0 < port < 65536 or not host or any(c in host for c in " /\r\n"):
            raise RegistryError("bad host or port")
        if not name.strip() or not username or not password or not folder:
            raise RegistryError("an IMAP source needs a name, a user name, a password and a folder")
        try:
            with self.engine.begin() as conn:
                tid = tenant_id(conn, tenant)
                if conn.execute(sa.select(imap_accounts.c.id).where(imap_accounts.c.tenant_id == tid,
                                                                    imap_accounts.c.name == name)).first():
                    raise RegistryError(f"an IMAP source named {name!r} already exists")
                stored = self.sealer.seal(password, PASSWORD_PURPOSE) if self.sealer is not None else password
                aid = inserted_id(conn.execute(imap_accounts.insert().values(
                    tenant_id=tid, name=name, host=host, port=port, tls=tls, username=username, password=stored,
                    folder=folder)))
        except IntegrityError:  # the same name added at the same moment
            raise RegistryError(f"an IMAP source named {name!r} already exists") from None
        return ImapAccount(aid, normalize_tenant(tenant), name, host, port, tls, username, password, folder)

    def list(self, tenant: str | None = None) -> list[ImapAccount]:
        q = (sa.select(imap_accounts, lookups.tenant_name_of(imap_accounts.c.tenant_id).label("tenant_name"))
             .where(imap_accounts.c.enabled.is_(True)))
        if tenant is not None:
            q = q.where(lookups.tenant_named(imap_accounts.c.tenant_id, tenant))
        with self.engine.connect() as conn:
            rows = conn.execute(q.order_by(imap_accounts.c.id)).all()
        out = []
        for r in rows:
            password = r.password
            if self.sealer is not None:
                try:
                    password = self.sealer.open(password, PASSWORD_PURPOSE)
                except SealError as exc:
                    log.warning("IMAP account left out", account=r.id, error=str(exc))
                    continue
            out.append(ImapAccount(r.id, r.tenant_name, r.name, r.host, r.port, r.tls, r.username, password,
                                   r.folder))
        return out

    def remove(self, tenant: str, account_id: int) -> bool:
        """Stop following an account of ``tenant`` (its checkpoints go with it); False when it has none
        with that id."""
        with self.engine.begin() as conn:
            tid = tenant_id(conn, tenant)
            owned = sa.select(imap_accounts.c.id).where(imap_accounts.c.id == account_id,
                                                        imap_accounts.c.tenant_id == tid)
            conn.execute(imap_checkpoints.delete().where(imap_checkpoints.c.account_id.in_(owned)))
            gone = conn.execute(imap_accounts.delete().where(imap_accounts.c.id == account_id,
                                                             imap_accounts.c.tenant_id == tid))
        return gone.rowcount > 0

    def status(self, tenant: str | None = None, account_id: int | None = None) -> builtins.list[dict[str, Any]]:
        """What an operator checks of each account, without its password: where it points, whether it is
        followed, the last error and how far the checkpoints reached."""
        acc, chk = imap_accounts, imap_checkpoints
        query = (sa.select(acc.c.id, lookups.tenant_name_of(acc.c.tenant_id).label("tenant"), acc.c.name, acc.c.host,
                           acc.c.port, acc.c.tls, acc.c.username, acc.c.folder, acc.c.enabled, acc.c.last_error,
                           acc.c.created_at)
                 .order_by(acc.c.id))
        if tenant is not None:
            query = query.where(lookups.tenant_named(acc.c.tenant_id, tenant))
        if account_id is not None:
            query = query.where(acc.c.id == account_id)
        with self.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(query)]
            marks: dict[int, tuple[int, Any]] = {}
            if rows:
                for r in conn.execute(sa.select(chk.c.account_id, chk.c.last_uid, chk.c.updated_at)
                                      .where(chk.c.account_id.in_([row["id"] for row in rows]))):
                    seen = marks.get(r.account_id)
                    if seen is None or (r.updated_at and (seen[1] is None or r.updated_at > seen[1])):
                        marks[r.account_id] = (int(r.last_uid), r.updated_at)
        for row in rows:
            row["enabled"] = bool(row["enabled"])
            row["last_uid"], row["synced_at"] = marks.get(row["id"], (None, None))
        return rows

    def checkpoint(self, account_id: int, folder: str) -> tuple[int, int] | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(imap_checkpoints.c.uidvalidity, imap_checkpoints.c.last_uid).where(
                imap_checkpoints.c.account_id == account_id, imap_checkpoints.c.folder == folder)).first()
            return (int(row.uidvalidity), int(row.last_uid)) if row else None

    def save_checkpoint(self, account_id: int, folder: str, uidvalidity: int, last_uid: int) -> None:
        retry(lambda: self._save_checkpoint(account_id, folder, uidvalidity, last_uid))

    def _save_checkpoint(self, account_id: int, folder: str, uidvalidity: int, last_uid: int) -> None:
        with self.engine.begin() as conn:
            done = conn.execute(imap_checkpoints.update().where(
                imap_checkpoints.c.account_id == account_id, imap_checkpoints.c.folder == folder)
                .values(uidvalidity=uidvalidity, last_uid=last_uid, updated_at=utcnow()))
            if not done.rowcount:
                conn.execute(imap_checkpoints.insert().values(account_id=account_id, folder=folder,
                                                              uidvalidity=uidvalidity, last_uid=last_uid))

    def set_error(self, account_id: int, error: str | None) -> None:
        with self.engine.begin() as conn:
            conn.execute(imap_accounts.update().where(imap_accounts.c.id == account_id)
                         .values(last_error=(error or None) and error[:2000]))


class ImapSource:
    def __init__(
        self,
        service: RepliesService,
        account: ImapAccount,
        *,
        ssl_context: ssl.SSLContext | None = None,
        idle_timeout: float = 5 * 60,  # re-sync at least this often, even if a server missed telling us
        poll_interval: float = 30.0,
        backoff: tuple[float, float] = (1.0, 300.0),
        timeout: float = 30.0,
        on_synced: Callable[[int], Any] | None = None,
        fetch_batch: int = 20,
    ) -> None:
        self.service = service
        self.account = account
        self.accounts = ImapAccounts(service.engine, service.sealer)
        self.ssl_context = ssl_context
        self.idle_timeout = idle_timeout
        self.poll_interval = poll_interval
        self.backoff = backoff
        self.timeout = timeout
        self.on_synced = on_synced
        self.fetch_batch = max(1, fetch_batch)  # messages per UID FETCH (each may be up to the size limit)
        self.processed = 0  # messages handed to the pipeline by this instance
        self.sessions = 0  # successful logins (reconnects show here)

    def _client(self) -> ImapClient:
        a = self.account
        return ImapClient(a.host, a.port, tls=a.tls, ssl_context=self.ssl_context, timeout=self.timeout)

    async def sync(self, client: ImapClient) -> int:
        """Fetch and process every message above the checkpoint; returns how many."""
        a = self.account
        selected = await client.select(a.folder, readonly=False)
        saved = await asyncio.to_thread(self.accounts.checkpoint, a.id, a.folder)
        last_uid = 0
        if saved is not None and saved[0] == selected.uidvalidity:
            last_uid = saved[1]
        elif saved is not None:
            log.warning("UIDVALIDITY changed, reading the folder again", account=a.id, folder=a.folder,
                        old=saved[0], new=selected.uidvalidity)
        if saved is None or saved[0] != selected.uidvalidity:
            await asyncio.to_thread(self.accounts.save_checkpoint, a.id, a.folder, selected.uidvalidity, 0)
        done = 0
        uids = await client.uid_search_from(last_uid + 1)
        for start in range(0, len(uids), self.fetch_batch):
            batch = uids[start:start + self.fetch_batch]
            messages = await client.uid_fetch_messages(batch)
            for uid in batch:
                raw = messages.get(uid)
                if raw is not None:
                    source = Source(a.tenant, a.source_name, uidvalidity=selected.uidvalidity, uid=uid)
                    await asyncio.to_thread(self.service.process_message, raw, source)
                    done += 1
                    self.processed += 1
            # Once per batch: a crash inside a batch re-reads it, and the pipeline's keys drop the repeats.
            await asyncio.to_thread(self.accounts.save_checkpoint, a.id, a.folder, selected.uidvalidity, batch[-1])
        if self.on_synced is not None:
            self.on_synced(done)
        return done

    async def run(self, stop: asyncio.Event) -> None:
        """Follow the folder until ``stop`` is set, reconnecting with backoff."""
        failures = 0
        while not stop.is_set():
            try:
                async with self._client() as client:
                    await client.login(self.account.username, self.account.password)
                    self.sessions += 1
                    failures = 0
                    await asyncio.to_thread(self.accounts.set_error, self.account.id, None)
                    await self._follow(client, stop)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - network, protocol or database: log, back off, reconnect
                failures += 1
                delay = min(self.backoff[1], self.backoff[0] * 2 ** min(failures - 1, 20))
                delay *= random.uniform(0.8, 1.2)
                known = isinstance(exc, ImapError | ProtocolError | OSError | TimeoutError | ssl.SSLError)
                log.warning("IMAP source error", account=self.account.id, error=f"{type(exc).__name__}: {exc}",
                            retry_in=round(delay, 1), **({} if known else {"unexpected": True}))
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(self.accounts.set_error, self.account.id, str(exc))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):  # not wait_for: it can drop a cancellation (3.11)
                        await stop.wait()

    async def _follow(self, client: ImapClient, stop: asyncio.Event) -> None:
        idle = "IDLE" in client.capabilities
        while not stop.is_set():
            await self.sync(client)
            if idle:
                # IDLE itself watches ``stop``: it ends with DONE before the connection is used again.
                await client.idle(self.idle_timeout, until=stop)
            else:
                try:
                    async with asyncio.timeout(self.poll_interval):
                        await stop.wait()
                    return
                except TimeoutError:
                    await client.noop()
