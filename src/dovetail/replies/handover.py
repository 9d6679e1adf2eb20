"""The hand-over of locally delivered replies to the replies service: a durable record at delivery, the
pipeline afterwards.

A message delivered to a reply inbox (or a tenant's replies intake) is already on stable storage in its
Maildir; what the replies engine needs besides is to know that it is there. The delivering process
(smtpd delivering directly, lmtpd, the queue manager) records that in ``reply_handovers`` — tenant,
mailbox, Maildir and the storage's key of the copy — and acknowledges the delivery (the MX's ``250``)
only once that record is committed with an fsync (:func:`dovetail.dbwriter.write_transaction` with
``durable=True``). Threading, classification, storage and the events are then the replies service's
work (:class:`PendingReplies`): it is woken through ``run/replies.wake`` (:mod:`.wake`) after each
commit, reads the copies back through the storage API and runs them through the pipeline in batches.

Why not run the pipeline at delivery, as before: its work (parsing, threading against the registry,
about a dozen statements per reply) cost the MX about 2.5 ms of CPU per reply, more than the whole of
the intake of a plain message, and held SQLite's one write lock while the other writers (the other smtpd
workers, the dispatcher) queued behind it. The record costs one INSERT per reply, in a transaction
shared by every delivery that finished meanwhile.

Guarantees:

- **Recorded before acknowledged.** :meth:`HandOver.__call__` returns only after the transaction that
  holds its deliveries has committed durably. Deliveries that finish while a batch is being written wait
  together and go in the next one (group commit, no timer: a lone delivery goes at once).
- **Nothing lost between the record and the webhook.** A row is deleted only after the pipeline has
  stored its reply (and the reply's events and webhook deliveries, in the pipeline's own transaction).
  A replies service that dies in between finds the row again when it starts and runs the message
  through the pipeline again, which recognises the copy by its source position (the Maildir key) and
  emits nothing the second time: no duplicate events.
- A copy that can no longer be read (deleted meanwhile) is dropped with a warning; one the pipeline
  refuses is tried again at later polls and dropped, logged, after ``max_attempts``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from dovetail.dbwriter import write_transaction
from dovetail.log import get_logger

from .dbretry import retry
from .pipeline import Source
from .schema import reply_handovers
from .sources.local import LocalHook

log = get_logger("replies")

MAX_BATCH = 256  # records per hand-over transaction
WORK_BATCH = 128  # messages per pipeline run in the replies service
MAX_ATTEMPTS = 5
POLL_INTERVAL = 1.0  # the replies service looks for records this often in case a wake-up was lost


@dataclass(frozen=True)
class Delivered:
    """A copy the delivery agent stored: whose mailbox, which Maildir, and the storage's key for it."""

    tenant: str
    mailbox: str
    maildir: Path
    key: str
    folder: str = "INBOX"  # or Junk, where the content filter sent it


def _node(name: str) -> str:
    return (name or "").strip().lower()


class HandOver:
    """The delivering side: records deliveries to reply inboxes, several per durable transaction."""

    def __init__(self, hook: LocalHook, *, wake: Callable[[], None] | None = None,
                 max_batch: int = MAX_BATCH, node: str = "") -> None:
        self.hook = hook
        self.engine = hook.engine
        self.wake = wake
        self.max_batch = max_batch
        self.node = _node(node)
        self._pending: list[tuple[Delivered, asyncio.Future[None]]] = []
        self._draining: asyncio.Task[None] | None = None

    def wants(self, item: Delivered) -> bool:
        """Whether the pipeline takes this mailbox's mail (blocking: reads a briefly cached list)."""
        return self.hook.wants(item.tenant, item.mailbox, item.maildir)

    async def __call__(self, items: list[Delivered]) -> None:
        """Record these deliveries for the replies service; returns once the record is committed durably
        (a failure to record is logged: the delivery stands, and the IMAP source or a replay catches up)."""
        if not items:
            return
        loop = asyncio.get_running_loop()
        waiting = []
        for item in items:
            future: asyncio.Future[None] = loop.create_future()
            self._pending.append((item, future))
            waiting.append(future)
        if self._draining is None or self._draining.done():
            self._draining = asyncio.create_task(self._drain())
        await asyncio.gather(*waiting)

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:self.max_batch], self._pending[self.max_batch:]
            try:
                await asyncio.to_thread(self._record, [item for item, _ in batch])
            except Exception as exc:  # noqa: BLE001 - the deliveries stand either way
                log.warning("reply hand-over failed for delivered messages", count=len(batch), error=repr(exc))
            finally:
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)

    def _record(self, items: list[Delivered]) -> None:
        rows = [{"node": self.node, "tenant": item.tenant, "mailbox": item.mailbox, "maildir": str(item.maildir),
                 "item": item.key, "folder": item.folder} for item in items if self.wants(item)]
        if not rows:
            return

        def commit() -> None:
            with write_transaction(self.engine, durable=True) as conn:
                conn.execute(reply_handovers.insert(), rows)

        retry(commit)
        if self.wake is not None:
            self.wake()


class PendingReplies:
    """The replies service's side: runs recorded deliveries of this node through the pipeline."""

    def __init__(self, hook: LocalHook, *, node: str = "", batch: int = WORK_BATCH,
                 max_attempts: int = MAX_ATTEMPTS) -> None:
        self.hook = hook
        self.engine = hook.engine
        self.pipeline = hook.service.pipeline
        self.node = _node(node)
        self.batch = batch
        self.max_attempts = max_attempts
        self._wake: asyncio.Event | None = None

    def wake(self) -> None:
        """Look for records now (call on the event loop: a delivery just committed some)."""
        if self._wake is not None:
            self._wake.set()

    def work_off(self, *, retry_failed: bool = False) -> int:
        """Run up to ``batch`` recorded deliveries through the pipeline and forget those done (blocking);
        returns how many records were read. Records that failed before wait for ``retry_failed``."""
        query = (sa.select(reply_handovers).where(reply_handovers.c.node == self.node)
                 .order_by(reply_handovers.c.id).limit(self.batch))
        if not retry_failed:
            query = query.where(reply_handovers.c.attempts == 0)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        if not rows:
            return 0
        done: list[int] = []
        failed: list[Any] = []
        work: list[tuple[Any, tuple[bytes, Source]]] = []
        for row in rows:
            try:
                loaded = self.hook.load(row.tenant, row.mailbox, row.maildir, row.item, row.folder)
            except ValueError as exc:  # a key that names no file of the Maildir: never readable
                log.warning("reply hand-over names no message", mailbox=row.mailbox, file=row.item, error=str(exc))
                done.append(row.id)
                continue
            except Exception as exc:  # noqa: BLE001 - one unreadable copy does not hold up the rest
                log.warning("reply hand-over could not read a message", mailbox=row.mailbox, file=row.item,
                            error=repr(exc))
                failed.append(row)
                continue
            if loaded is None:  # gone from the Maildir (logged by load)
                done.append(row.id)
            else:
                work.append((row, loaded))
        results = self.pipeline.process_many([loaded for _, loaded in work])
        for (row, _), result in zip(work, results, strict=True):
            if isinstance(result, Exception):
                log.warning("reply pipeline failed for a delivered message", mailbox=row.mailbox, file=row.item,
                            attempt=row.attempts + 1, error=repr(result))
                failed.append(row)
            else:
                done.append(row.id)
        retry(lambda: self._settle(done, failed))
        return len(rows)

    def _settle(self, done: list[int], failed: list[Any]) -> None:
        given_up = [row for row in failed if row.attempts + 1 >= self.max_attempts]
        for row in given_up:
            log.error("reply hand-over given up: the message stays in its mailbox, unprocessed",
                      mailbox=row.mailbox, file=row.item, attempts=row.attempts + 1)
        drop = done + [row.id for row in given_up]
        again = [row.id for row in failed if row.attempts + 1 < self.max_attempts]
        with write_transaction(self.engine) as conn:
            if drop:
                conn.execute(reply_handovers.delete().where(reply_handovers.c.id.in_(drop)))
            if again:
                conn.execute(reply_handovers.update().where(reply_handovers.c.id.in_(again))
                             .values(attempts=reply_handovers.c.attempts + 1))

    async def run(self, stop: asyncio.Event, poll_interval: float = POLL_INTERVAL) -> None:
        """Work records off as they are committed (woken by :meth:`wake`), and every ``poll_interval``
        seconds in any case: at start (what a crash left), after a lost wake-up, and failed records."""
        self._wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        next_poll = 0.0
        while not stop.is_set():
            self._wake.clear()
            polling = loop.time() >= next_poll
            if polling:
                next_poll = loop.time() + poll_interval
            try:
                read = await asyncio.to_thread(self.work_off, retry_failed=polling)
            except Exception as exc:  # noqa: BLE001 - the database may be away a moment: try again later
                log.warning("reply hand-overs could not be read", error=repr(exc))
                read = 0
            if read >= self.batch:
                continue
            waits = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
            try:
                await asyncio.wait(waits, timeout=max(0.0, next_poll - loop.time()),
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waits:
                    waiter.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await waiter

