"""The queue manager: moves messages through the queue and hands recipients to delivery agents.

This is Postfix's qmgr. It takes messages from ``incoming/`` (on a wake-up) and ``deferred/`` (when
due: a deferred file's mtime is its next attempt time, as in Postfix, so scheduling needs only a
stat), renames each to ``active/``, groups its pending recipients by delivery agent, records every
outcome durably in the queue file, and then removes the file, or moves it to ``deferred/`` with
exponential backoff, or returns it to the sender once it is too old.

Wake-ups: producers in this process call ``notify()`` (``Queue.wake`` does it); other processes
write a byte to the FIFO ``public/qmgr`` (``I`` = new mail, ``F`` = rescan deferred). A slow
periodic scan of both directories covers lost wake-ups. Only one manager may run per queue id: a
manager given a ``Shard`` (:mod:`dovetail.queue.shard`) takes only the ids of its shard from
``incoming/``, ``deferred/`` and, after a crash, ``active/``, locks its shard in ``pid/qmgr.lock``,
and listens on its own FIFO (``public/qmgr.<index>``); every wake-up goes to all of them.

Crash semantics: on start, whatever a crash left in ``active/`` goes back to ``incoming/``.
Recipients whose ``sent``/``bounced`` record reached the disk are not tried again. The window
between an agent's delivery (a Maildir file made visible) and the fsync of its status record can
repeat that one delivery after a crash, the same window Postfix has. A delivery slot is held until
the record is on disk, so a crash repeats at most ``max_concurrent_deliveries`` agent calls. A DSN
committed just before a crash, before its recipients were marked notified, can be sent twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import inspect
import os
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from dovetail.log import get_logger
from dovetail.queue.agent import DeliveryAgent, DeliveryResult
from dovetail.queue.batch import ThreadBatch
from dovetail.queue.dsn import DsnKind, build_dsn
from dovetail.queue.envelope import Envelope, QueueRecipient
from dovetail.queue.qfile import CorruptQueueFile, QueuedMessage
from dovetail.queue.shard import Shard, ShardBusy, ShardLock
from dovetail.queue.store import TRIGGER_DEFERRED, Queue

log = get_logger("qmgr")


@dataclass
class QueueConfig:
    """Scheduling knobs, named and defaulted as in Postfix (times in seconds)."""

    minimal_backoff: float = 300.0
    maximal_backoff: float = 4000.0
    maximal_queue_lifetime: float = 5 * 86400.0
    bounce_queue_lifetime: float = 5 * 86400.0
    delay_warning_time: float = 0.0
    scan_interval: float = 60.0
    max_concurrent_deliveries: int = 20
    active_limit: int = 1000
    bounce_size_limit: int = 50_000
    hostname: str | None = None

    def backoff(self, attempts: int) -> float:
        """Delay before the next try after ``attempts`` failed tries: doubling, clamped."""
        delay = self.minimal_backoff * (2 ** max(0, min(attempts - 1, 60)))
        return max(self.minimal_backoff, min(delay, self.maximal_backoff))

    def next_attempt(self, envelope: Envelope, attempts: int, now: float) -> float | None:
        """When a message deferred after ``attempts`` tries is tried again, or ``None`` when it is
        too old for another try (it is returned to the sender instead). What ``_handle`` does, for
        delivery agents that report the schedule with their outcome."""
        lifetime = self.bounce_queue_lifetime if envelope.sender == "" else self.maximal_queue_lifetime
        if now - envelope.arrival >= lifetime:
            return None
        return now + self.backoff(attempts)


class QueueManager:
    """Runs deliveries for one queue.

    ``agents`` is either ``transport_for(address) -> agent`` or a mapping of transport names to
    agents together with ``transport_for(address) -> name``. An unknown transport defers.
    ``transport_for`` may be a coroutine function, for a lookup that must not block the loop.
    ``shard`` makes this manager one of several on the queue, each delivering its share of the ids.
    """

    def __init__(
        self,
        queue: Queue,
        agents: Mapping[str, DeliveryAgent] | Callable[[str], DeliveryAgent | None],
        config: QueueConfig | None = None,
        transport_for: Callable[[str], str | Awaitable[str]] | None = None,
        shard: Shard | None = None,
    ) -> None:
        self.queue = queue
        self.shard = shard or Shard()
        self.config = config or QueueConfig()
        self._agents = agents
        self._transport_for = transport_for
        self._hostname = self.config.hostname or socket.getfqdn()
        self._wake = asyncio.Event()
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._known: set[str] = set()
        self._backlog: deque[tuple[str, str]] = deque()
        self._deferred: list[tuple[float, str]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._rescan_deferred = True
        self._rescan_incoming = True
        self._delivery_slots = asyncio.Semaphore(self.config.max_concurrent_deliveries)
        # Per-message file work that takes microseconds: batched, one thread hop for many messages.
        self._activate_batch = ThreadBatch(self._activate)
        self._remove_batch = ThreadBatch(self._remove)
        self.started = asyncio.Event()
        self.delivered = 0

    # --- wake-ups -----------------------------------------------------------------------------

    def notify(self, trigger: bytes = b"I") -> None:
        """Wake the manager; callable from any thread."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._on_trigger, trigger)

    def _on_trigger(self, data: bytes) -> None:
        if TRIGGER_DEFERRED in data:
            self._rescan_deferred = True
        self._rescan_incoming = True
        self._wake.set()

    def _on_fifo(self, fd: int) -> None:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        self._on_trigger(data)

    def stop(self) -> None:
        """Finish the deliveries in progress and return from ``run``."""
        self._stopping = True
        self._wake.set()

    # --- main loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            lock = ShardLock(self.queue.root / "pid" / "qmgr.lock", self.shard)
        except ShardBusy:
            raise RuntimeError(f"a queue manager already runs for {self.queue.root}") from None
        trigger = self.queue.trigger_for(self.shard.trigger_name())
        fifo_r = os.open(trigger, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        fifo_w = os.open(trigger, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        self._loop.add_reader(fifo_r, self._on_fifo, fifo_r)
        if self.shard.whole:  # a sharded manager is woken through its FIFO, as its siblings are
            self.queue.add_listener(self.notify)
        try:
            moved = await asyncio.to_thread(self.queue.recover, self.shard.owns)
            if moved:
                log.info("recovered messages from active queue", count=moved)
            self.started.set()
            last_scan = 0.0
            while not self._stopping:
                self._wake.clear()
                now = time.time()
                if now - last_scan >= self.config.scan_interval:
                    self._rescan_deferred = self._rescan_incoming = True
                    last_scan = now
                if self._rescan_incoming:
                    self._rescan_incoming = False
                    await self._scan("incoming")
                if self._rescan_deferred:
                    self._rescan_deferred = False
                    await self._scan("deferred")
                self._take_due(time.time())
                self._start_tasks()
                timeout = self.config.scan_interval - (time.time() - last_scan)
                if self._deferred:
                    timeout = min(timeout, self._deferred[0][0] - time.time())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), max(0.0, timeout))
            while self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
        finally:
            self.queue.remove_listener(self.notify)
            self._loop.remove_reader(fifo_r)
            os.close(fifo_r)
            os.close(fifo_w)
            lock.release()

    async def _scan(self, state: str) -> None:
        if state == "incoming":
            owns = self.shard.owns
            for qid in await asyncio.to_thread(self.queue.ids, "incoming"):
                if qid not in self._known and owns(qid):
                    self._known.add(qid)
                    self._backlog.append((qid, "incoming"))
        else:
            self._deferred = await asyncio.to_thread(self._deferred_times)
            heapq.heapify(self._deferred)

    def _deferred_times(self) -> list[tuple[float, str]]:
        out = []
        owns = self.shard.owns
        for qid in self.queue.ids("deferred"):
            if not owns(qid):
                continue
            with contextlib.suppress(FileNotFoundError):
                out.append((os.stat(self.queue.file("deferred", qid)).st_mtime, qid))
        return out

    def _take_due(self, now: float) -> None:
        while self._deferred and self._deferred[0][0] <= now:
            _, qid = heapq.heappop(self._deferred)
            if qid not in self._known:
                self._known.add(qid)
                self._backlog.append((qid, "deferred"))

    def _start_tasks(self) -> None:
        while self._backlog and len(self._tasks) < self.config.active_limit and not self._stopping:
            qid, state = self._backlog.popleft()
            task = asyncio.create_task(self._process(qid, state))
            self._tasks.add(task)
            task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._start_tasks()
        if not self._tasks and not self._backlog:
            self._wake.set()

    # --- one message --------------------------------------------------------------------------

    async def _process(self, qid: str, state: str) -> None:
        try:
            msg = await self._activate_batch(qid, state)
            if msg is None:
                return
            try:
                await self._handle(msg)
            finally:
                msg.close()
        except Exception as exc:
            log.exception(f"queue manager error: {exc}", qid=qid)
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._defer_file, qid, time.time() + self.config.minimal_backoff)
        finally:
            self._known.discard(qid)

    def _activate(self, qid: str, state: str) -> QueuedMessage | None:
        """Move to ``active/`` and open, in one thread call; None when it is gone or corrupt."""
        if not self.queue.move(qid, state, "active"):
            return None
        try:
            return QueuedMessage(qid, self.queue.path("active", qid))
        except FileNotFoundError:
            return None
        except CorruptQueueFile as exc:
            log.warning(f"corrupt queue file, moved to corrupt queue: {exc}", qid=qid)
            self.queue.move(qid, "active", "corrupt")
            return None

    async def _handle(self, msg: QueuedMessage) -> None:
        env = msg.envelope
        qid = msg.queue_id
        log.info(f"from=<{env.sender}>, size={msg.size}, nrcpt={len(env.recipients)} (queue active)", qid=qid)
        pending = env.pending()
        if pending:
            results = await self._deliver_all(msg, pending)
            for res in results:
                self._log_result(msg, res)
            self.delivered += sum(1 for r in results if r.status == "sent")
        unnotified = [r for r in env.recipients if not r.notified]
        await self._notify(msg, [r for r in unnotified if r.status == "bounced"], "failed")
        await self._notify(msg, [r for r in unnotified if r.status == "sent"], "delivered")
        now = time.time()
        if env.pending():
            cfg = self.config
            lifetime = cfg.bounce_queue_lifetime if env.sender == "" else cfg.maximal_queue_lifetime
            if now - env.arrival >= lifetime:
                await self._expire(msg, now)
            else:
                await self._defer(msg, now)
                return
        if await self._remove_batch(msg):
            log.info("removed", qid=qid)

    async def _deliver_all(self, msg: QueuedMessage, pending: list[QueueRecipient]) -> list[DeliveryResult]:
        groups: dict[int, tuple[DeliveryAgent, list[QueueRecipient]]] = {}
        results: list[DeliveryResult] = []
        for rcpt in pending:
            agent = await self._agent_for(rcpt.address)
            if agent is None:
                results.append(DeliveryResult(rcpt, "deferred", "4.3.5", "mail transport unavailable"))
                continue
            groups.setdefault(id(agent), (agent, []))[1].append(rcpt)
        if results:
            await asyncio.to_thread(msg.append_update, self._results_record(results))
        if len(groups) == 1:  # the common case: no task and gather future for a single call
            ((agent, rcpts),) = groups.values()
            batches = [await self._call(agent, msg, rcpts)]
        else:
            batches = await asyncio.gather(*(self._call(agent, msg, rcpts) for agent, rcpts in groups.values()))
        for batch in batches:
            results.extend(batch)
        return results

    async def _agent_for(self, address: str) -> DeliveryAgent | None:
        try:
            if isinstance(self._agents, Mapping):
                if self._transport_for is not None:
                    name = self._transport_for(address)
                    if inspect.isawaitable(name):
                        name = await name
                    return self._agents.get(name)
                return next(iter(self._agents.values())) if len(self._agents) == 1 else None
            return self._agents(address)
        except Exception as exc:
            log.warning(f"transport lookup failed for {address}: {exc}")
            return None

    async def _call(
        self, agent: DeliveryAgent, msg: QueuedMessage, rcpts: list[QueueRecipient]
    ) -> list[DeliveryResult]:
        async with self._delivery_slots:
            try:
                got = await agent.deliver(msg, rcpts)
            except Exception as exc:
                log.exception(f"delivery agent failed: {exc}", qid=msg.queue_id)
                got = []
            by_index = {r.recipient.index: r for r in got}
            missing = "delivery agent returned no result"
            results = [by_index.get(r.index) or DeliveryResult(r, "deferred", "4.3.0", missing) for r in rcpts]
            # Recorded before the slot is released: at most max_concurrent_deliveries calls can sit
            # between "delivered" and "recorded", which bounds what a crash can repeat. When this call
            # delivered every recipient still pending, the file is unlinked next: the record needs no
            # fsync (kill -9 keeps the page cache; after a power loss a repeated local delivery finds
            # its first copy by name), which saves one fsync per message.
            pending = {r.index for r in msg.envelope.pending()}
            final = all(r.status == "sent" for r in results) and {r.index for r in rcpts} == pending
            if final:
                msg.append_update(self._results_record(results), sync=False)  # page cache only: no hop
            else:
                await asyncio.to_thread(msg.append_update, self._results_record(results))
        return results

    @staticmethod
    def _results_record(results: list[DeliveryResult]) -> dict[str, Any]:
        now = time.time()
        update: dict[str, dict[str, Any]] = {}
        for res in results:
            fields: dict[str, Any] = {"c": res.dsn_code, "w": res.reason, "t": now}
            if res.relay:
                fields["y"] = res.relay
            if res.status in ("sent", "bounced"):
                fields["s"] = res.status
            update[str(res.recipient.index)] = fields
        return {"r": update}

    def _log_result(self, msg: QueuedMessage, res: DeliveryResult, status: str | None = None) -> None:
        rcpt = res.recipient
        parts = [f"to=<{rcpt.address}>"]
        if rcpt.original and rcpt.original != rcpt.address:
            parts.append(f"orig_to=<{rcpt.original}>")
        parts += [
            f"relay={res.relay or 'none'}",
            f"delay={max(0.0, time.time() - msg.envelope.arrival):.2f}",
            f"dsn={res.dsn_code}",
            f"status={status or res.status} ({res.reason})",
        ]
        line = ", ".join(parts)
        if res.status == "sent":
            log.info(line, qid=msg.queue_id)
        else:
            log.warning(line, qid=msg.queue_id)

    async def _notify(self, msg: QueuedMessage, rcpts: list[QueueRecipient], kind: DsnKind) -> None:
        """Send one DSN of ``kind`` about those of ``rcpts`` that asked for it; mark them notified."""
        event = {"failed": "FAILURE", "delayed": "DELAY", "delivered": "SUCCESS"}[kind]
        wanted = [r for r in rcpts if r.wants(event)]
        env = msg.envelope
        if not wanted or env.sender == "":
            return
        limit = self.config.bounce_size_limit
        data = await asyncio.to_thread(build_dsn, msg, wanted, kind, self._hostname, limit)
        bounce = Envelope(sender="", recipients=[QueueRecipient(env.sender)])
        bqid = await asyncio.to_thread(self.queue.inject, bounce, data)
        label = {"failed": "non-delivery", "delayed": "delay", "delivered": "delivery"}[kind]
        log.info(f"sender {label} status notification: {bqid}", qid=msg.queue_id)
        if kind != "delayed":
            await asyncio.to_thread(msg.append_update, {"r": {str(r.index): {"n": 1} for r in wanted}})

    async def _expire(self, msg: QueuedMessage, now: float) -> None:
        expired = []
        for rcpt in msg.envelope.pending():
            code = rcpt.dsn_code if rcpt.dsn_code and rcpt.dsn_code.startswith("4.") else "4.4.7"
            reason = rcpt.reason or "delivery time expired"
            expired.append(DeliveryResult(rcpt, "bounced", code, reason, rcpt.relay))
        await asyncio.to_thread(msg.append_update, self._results_record(expired))
        for res in expired:
            self._log_result(msg, res, status="expired, returned to sender")
        await self._notify(msg, [r.recipient for r in expired], "failed")

    async def _defer(self, msg: QueuedMessage, now: float) -> None:
        env = msg.envelope
        attempts = env.attempts + 1
        due = self.config.next_attempt(env, attempts, now) or now + self.config.backoff(attempts)
        reasons = [r.reason for r in env.pending() if r.reason]
        update: dict[str, Any] = {"m": {"a": attempts, "x": due, "w": reasons[0] if reasons else None}}
        warn = self.config.delay_warning_time
        if warn > 0 and not env.delay_warned and now - env.arrival >= warn:
            update["m"]["d"] = True
            env.next_attempt = due
            await self._notify(msg, env.pending(), "delayed")
        await asyncio.to_thread(msg.append_update, update)
        if await asyncio.to_thread(self._defer_file, msg.queue_id, due):
            heapq.heappush(self._deferred, (due, msg.queue_id))

    def _remove(self, msg: QueuedMessage) -> bool:
        """Close, then unlink, in a worker thread: freeing the inode happens at the last of the two,
        and it writes to the file system journal, which must not stall the event loop."""
        msg.close()
        return _unlink(self.queue.file("active", msg.queue_id))

    def _defer_file(self, qid: str, due: float) -> bool:
        """active/ -> deferred/ with the next attempt time as mtime (set before the rename)."""
        path = self.queue.file("active", qid)
        try:
            os.utime(path, (due, due))
        except FileNotFoundError:
            return False
        return self.queue.move(qid, "active", "deferred")


def _unlink(path: str) -> bool:
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False
