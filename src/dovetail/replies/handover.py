"""The hand-over of locally delivered messages to the replies pipeline, committed in batches.

The queue manager delivers many messages at once; handing each to the pipeline in a transaction of
its own makes every reply pay a commit (an fsync) and makes the delivery processes queue up for the
database's write lock. Here deliveries that finish while a batch is being stored wait together and
go in the next batch, one transaction for all of them (group commit, no timer: a lone message goes
at once). Each delivery call returns only after its batch has committed durably (the transaction is
a ``write_transaction(durable=True)``: on SQLite its log is fsynced before the commit returns, where the
database's default level survives a crash of the process but not of the machine), so a reply is on
stable storage before the delivery is acknowledged (the MX's ``250``, the queue letting go of it).
After a commit that stored events the dispatcher is woken (:mod:`.wake`) instead of finding them at its
next poll.

Measured and not adopted: recording only a small row here (tenant, Maildir, key) and running the pipeline
in the replies service. It halved the MX's CPU per reply, but moved the pipeline's work into the one
replies process beside the dispatcher, which then fell behind even at 100 replies/s on a busy 2-core box
(p50 1.4 s against 18 ms), while here the work is spread over the delivering processes and an MX that
cannot keep pace slows its ``250`` instead of building a backlog.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dovetail.log import get_logger

from .pipeline import ReplyRecord
from .sources.local import LocalHook

log = get_logger("replies")

MAX_BATCH = 64


@dataclass(frozen=True)
class Delivered:
    """A copy the delivery agent stored: whose mailbox, which Maildir, and the storage's key for it."""

    tenant: str
    mailbox: str
    maildir: Path
    key: str
    folder: str = "INBOX"  # or Junk, where the content filter sent it


class HandOver:
    def __init__(self, hook: LocalHook, *, wake: Callable[[], None] | None = None,
                 max_batch: int = MAX_BATCH) -> None:
        self.hook = hook
        self.wake = wake
        self.max_batch = max_batch
        self._pending: list[tuple[Delivered, asyncio.Future[None]]] = []
        self._draining: asyncio.Task[None] | None = None

    def wants(self, item: Delivered) -> bool:
        """Whether the pipeline takes this mailbox's mail (blocking: reads a briefly cached list)."""
        return self.hook.wants(item.tenant, item.mailbox, item.maildir)

    async def __call__(self, items: list[Delivered]) -> None:
        """Store these deliveries' replies; returns once they are committed (failures are logged: the
        delivery stands, and the IMAP source or a replay catches up)."""
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
                await asyncio.to_thread(self._store, [item for item, _ in batch])
            except Exception as exc:  # noqa: BLE001 - the deliveries stand either way
                log.warning("reply pipeline failed for delivered messages", count=len(batch), error=repr(exc))
            finally:
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)

    def _store(self, items: list[Delivered]) -> None:
        work: list[tuple[Delivered, tuple]] = []
        for item in items:
            try:
                if not self.wants(item):
                    continue
                loaded = self.hook.load(item.tenant, item.mailbox, item.maildir, item.key, item.folder)
            except Exception as exc:  # noqa: BLE001 - one unreadable copy does not hold up the rest
                log.warning("reply pipeline failed for a delivered message", mailbox=item.mailbox, file=item.key,
                            error=repr(exc))
                continue
            if loaded is not None:
                work.append((item, loaded))
        results = self.hook.service.pipeline.process_many([loaded for _, loaded in work], durable=True)
        woken = False
        for (item, _), result in zip(work, results, strict=True):
            if isinstance(result, Exception):
                log.warning("reply pipeline failed for a delivered message", mailbox=item.mailbox, file=item.key,
                            error=repr(result))
            elif isinstance(result, ReplyRecord) and result.events and not woken and self.wake is not None:
                self.wake()
                woken = True
