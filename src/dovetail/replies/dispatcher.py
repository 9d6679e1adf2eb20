"""The webhook dispatcher: posts due outbox deliveries, signed, and records each outcome.

All state is in the outbox table, so a restarted dispatcher carries on where the last one stopped:
a delivery posted but not yet recorded when the process died is posted again (at-least-once), with
the same ``webhook-id`` (the event id) so receivers can drop the duplicate.

On SQLite one dispatcher posts at a time: it holds the database's ``dispatcher`` role (a lock file the
kernel releases with the process, :func:`dovetail.dbwriter.take_role`), and another one started meanwhile
(a reload's overlap) waits for it. Being the only consumer, the sole dispatcher needs no leases: it reads
due deliveries and keeps those in hand in memory, and records outcomes in the background, each group in
one transaction, so posting never waits for SQLite's one write lock (shared with every process storing
replies). Elsewhere (PostgreSQL, several nodes) dispatchers claim with leases. Time comes from an
injectable clock and the retry delays from an injectable :class:`RetrySchedule`, which is how tests
drive a day of retries without waiting for it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from dovetail.dbwriter import Role, is_sqlite_file, take_role
from dovetail.log import get_logger

from . import signing
from .broker import BrokerError, NatsPublisher, is_broker_url
from .outbox import Outbox, RetrySchedule
from .webhook_client import PostError, WebhookClient

log = get_logger("replies")

USER_AGENT = "Dovetail-Webhooks/1"
MAX_RESPONSE_ERROR = 500
CLAIM_BATCH = 50
ROLE = "dispatcher"
LEASED, SOLE, WAITING = "leased", "sole", "waiting"


class Dispatcher:
    def __init__(
        self,
        outbox: Outbox,
        *,
        schedule: RetrySchedule | None = None,
        clock: Callable[[], float] = time.time,
        timeout: float = 10.0,
        concurrency: int = 8,
        window: int = 64,
        poll_interval: float = 1.0,
        lease: float = 60.0,
        allow_private: bool | None = None,
        broker: NatsPublisher | None = None,
    ) -> None:
        self.outbox = outbox
        self.broker = broker  # publishes the deliveries of ``nats:`` endpoints (events.nats_url)
        self.schedule = schedule or RetrySchedule()
        self.clock = clock
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.lease = max(lease, timeout * 3)  # connect, answer, and once more after a stale kept-alive connection
        self.per_endpoint = max(1, concurrency)  # posts in flight to one endpoint
        self.window = max(self.per_endpoint, window)  # posts in flight in all
        self._endpoint_slots: dict[int, asyncio.Semaphore] = {}
        # Loopback and private receivers are refused after resolution unless replies.webhook_allow_private.
        self._guard = not (outbox.allow_private if allow_private is None else allow_private)
        self._wake: asyncio.Event | None = None
        self._client: WebhookClient | None = None
        self._role: Role | None = None
        self.mode = LEASED if not is_sqlite_file(outbox.engine) else WAITING
        # The sole dispatcher's claims: in flight or posted and not yet recorded; recorded ones stay
        # excluded from a read that may have started before their commit (tagged with the commit's count).
        self._held: set[int] = set()
        self._recorded: dict[int, int] = {}
        self._commits = 0
        self._outcomes: list[tuple[dict[str, Any], int | None, str | None]] = []
        self._recorder: asyncio.Future[None] | None = None

    def wake(self) -> None:
        """Look for due deliveries now (called in-process when an event was just stored)."""
        if self._wake is not None:
            self._wake.set()

    async def __aenter__(self) -> Dispatcher:
        self._client = WebhookClient(timeout=self.timeout, guard=self._guard, user_agent=USER_AGENT,
                                     max_idle=max(16, self.per_endpoint))
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self._flush_outcomes()
        finally:
            self._give_up_role()
        if self.broker is not None:
            await self.broker.close()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def run_once(self) -> int:
        """Post every delivery due now; returns how many were attempted.

        Posts flow rather than go in lock-step batches: as soon as some finish, their outcomes are
        recorded and more due deliveries are claimed, up to ``window`` in flight, in one transaction for
        all that finished together (one write lock per wave: the lock is shared with every process that
        stores replies). Each endpoint has at most ``per_endpoint`` posts in flight, and an
        endpoint at that limit gets no new claims, so one slow receiver cannot fill the window and hold
        up the others."""
        if self._client is None:
            async with self:
                return await self.run_once()
        if self.mode == WAITING:
            await asyncio.to_thread(self._take_role)
        if self.mode == SOLE:
            return await self._run_sole()
        if self.mode == WAITING:
            return 0  # another dispatcher of this database is posting
        total = 0
        inflight: dict[asyncio.Task[tuple[dict[str, Any], int | None, str | None]], dict[str, Any]] = {}
        claiming: asyncio.Future[tuple[list[str], list[dict[str, Any]]]] | None = None
        more = True  # the last claim may have left due deliveries behind
        outcomes: list[tuple[dict[str, Any], int | None, str | None]] = []
        recording: list[dict[str, Any]] = []
        try:
            while True:
                room = self.window - len(inflight)
                limit = min(room, CLAIM_BATCH) if more and room > 0 else 0
                if limit or outcomes:
                    # The finished posts' outcomes and the next claim: one transaction, one write lock.
                    busy = self._busy_endpoints(inflight.values())
                    claiming = asyncio.ensure_future(asyncio.to_thread(
                        self.outbox.record_and_claim, outcomes, now=self.clock(), schedule=self.schedule,
                        limit=limit, lease=self.lease, skip_endpoints=busy))
                    statuses, batch = await asyncio.shield(claiming)
                    claiming = None
                    self._log_outcomes(outcomes, statuses)
                    outcomes, recording = [], []
                    more = limit > 0 and len(batch) == limit
                    total += len(batch)
                    for delivery in batch:
                        inflight[asyncio.ensure_future(self._post(delivery))] = delivery
                if not inflight:
                    return total
                done, _ = await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
                outcomes = [task.result() for task in done]
                recording = [inflight.pop(task) for task in done]
                more = True  # slots and endpoints freed: look again
        except asyncio.CancelledError:
            for task in inflight:
                task.cancel()
            await self._give_back(claiming, list(inflight.values()) + recording)
            raise

    def _take_role(self) -> None:
        try:
            self._role = take_role(self.outbox.engine, ROLE)
        except OSError as exc:  # the lock file cannot be opened here: fall back to leases
            log.warning("cannot take the dispatcher role; claiming with leases", error=str(exc))
            self.mode = LEASED
            return
        if self._role is not None:
            self.mode = SOLE

    def _give_up_role(self) -> None:
        if self._role is not None:
            self._role.release()
            self._role = None
            self.mode = WAITING
            self._held.clear()
            self._recorded.clear()

    async def _run_sole(self) -> int:
        """``run_once`` for the sole dispatcher: claims are reads, outcomes are recorded in the background."""
        total = 0
        inflight: dict[asyncio.Task[tuple[dict[str, Any], int | None, str | None]], dict[str, Any]] = {}
        more = True
        skipped: set[int] = set()  # endpoints left out of the last read for having their share in flight
        try:
            while True:
                room = self.window - len(inflight)
                limit = min(room, CLAIM_BATCH) if more and room > 0 else 0
                if limit:
                    if self._wake is not None:
                        self._wake.clear()  # this read covers what was stored until now
                    started = self._commits
                    self._recorded = {i: n for i, n in self._recorded.items() if n > started}
                    busy = self._busy_endpoints(inflight.values())
                    skipped = set(busy)
                    read = await asyncio.to_thread(
                        self.outbox.peek_due, self.clock(), limit, busy, self._held | self._recorded.keys())
                    more = len(read) == limit
                    # Recorded while this read ran: it may have seen them still pending.
                    batch = [d for d in read if d["id"] not in self._held and self._recorded.get(d["id"], 0)
                             <= started]
                    total += len(batch)
                    for delivery in batch:
                        self._held.add(delivery["id"])
                        inflight[asyncio.ensure_future(self._post(delivery))] = delivery
                if not inflight:
                    break
                done, _ = await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
                freed = set()
                for task in done:
                    delivery = inflight.pop(task)
                    freed.add(delivery["endpoint_id"])
                    self._outcomes.append(task.result())
                if self._recorder is None or self._recorder.done():
                    self._recorder = asyncio.ensure_future(self._record_outcomes())
                # Read again only when it can find something: the last read was cut short, an endpoint
                # it skipped has room now, or new events were stored since (a wake-up; without the run
                # loop's wake-ups, always). A post finishing is not by itself a reason for a query.
                more = more or bool(freed & skipped) or self._wake is None or self._wake.is_set()
        except asyncio.CancelledError:
            for task in inflight:
                task.cancel()  # nothing leased: whatever is unrecorded is posted again by the next dispatcher
            raise
        await self._flush_outcomes()
        return total

    async def _record_outcomes(self) -> None:
        """Record what has finished, one transaction per group: outcomes that finish while a group is being
        written go in the next one."""
        while self._outcomes:
            group, self._outcomes = self._outcomes, []
            try:
                statuses = await asyncio.to_thread(self.outbox.record_many, group, now=self.clock(),
                                                   schedule=self.schedule)
                self._log_outcomes(group, statuses)
            except Exception as exc:  # noqa: BLE001 - not recorded: they are posted again (at-least-once)
                log.warning("webhook outcomes not recorded", error=str(exc))
            self._commits += 1
            for delivery, _status, _error in group:
                self._held.discard(delivery["id"])
                self._recorded[delivery["id"]] = self._commits

    async def _flush_outcomes(self) -> None:
        while self._recorder is not None:
            recorder = self._recorder
            await asyncio.shield(recorder)
            if recorder is self._recorder:
                self._recorder = None
                if self._outcomes:
                    self._recorder = asyncio.ensure_future(self._record_outcomes())

    def _busy_endpoints(self, deliveries: Any) -> list[int]:
        counts: dict[int, int] = {}
        for delivery in deliveries:
            counts[delivery["endpoint_id"]] = counts.get(delivery["endpoint_id"], 0) + 1
        return [endpoint for endpoint, n in counts.items() if n >= self.per_endpoint]

    def _log_outcomes(self, outcomes: list[tuple[dict[str, Any], int | None, str | None]],
                      statuses: list[str]) -> None:
        for (delivery, status, error), outcome in zip(outcomes, statuses, strict=True):
            log.info("webhook", event_id=delivery["event_id"], url=_without_credentials(delivery["url"]),
                     status=status or error, outcome=outcome, attempt=delivery["attempts"] + 1)

    async def _give_back(self, claiming: asyncio.Future[tuple[list[str], list[dict[str, Any]]]] | None,
                         unrecorded: list[dict[str, Any]]) -> None:
        """Stopped mid-flow: release what was claimed and not recorded, so a restarted dispatcher posts
        it now rather than when the lease runs out. (A killed process cannot: its leases expire.)
        Outcomes whose transaction committed have no lease left, so releasing them changes nothing."""
        try:
            if claiming is not None:
                _statuses, claimed = await claiming  # a transaction already running in its thread completes
                unrecorded = unrecorded + claimed
        except Exception as exc:  # noqa: BLE001 - nothing was claimed; release the rest
            log.warning("webhook outcomes not recorded", error=str(exc))
        try:
            if unrecorded:
                await asyncio.to_thread(self.outbox.release, unrecorded)
        except Exception as exc:  # noqa: BLE001 - the leases still expire on their own
            log.warning("webhook leases not released", error=str(exc))

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set, sleeping until the next due delivery or a wake-up."""
        self._wake = asyncio.Event()
        async with self:
            while not stop.is_set():
                self._wake.clear()  # before looking: a wake-up during run_once is kept for the next round
                try:
                    await self.run_once()
                except Exception as exc:  # noqa: BLE001 - the database may be briefly away; keep going
                    log.warning("webhook dispatcher error", error=str(exc))
                waiter = asyncio.ensure_future(self._wake.wait())
                stopper = asyncio.ensure_future(stop.wait())
                await asyncio.wait({waiter, stopper}, timeout=self.poll_interval,
                                   return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                stopper.cancel()

    async def _post(self, delivery: dict[str, Any]) -> tuple[dict[str, Any], int | None, str | None]:
        assert self._client is not None
        body = delivery["payload"].encode()
        status: int | None = None
        error: str | None = None
        if delivery["secret"] is None:
            return delivery, None, "the endpoint's signing secret cannot be opened with this data directory's key"
        slots = self._endpoint_slots.get(delivery["endpoint_id"])
        if slots is None:
            slots = self._endpoint_slots[delivery["endpoint_id"]] = asyncio.Semaphore(self.per_endpoint)
        async with slots:
            # Signed with the wall clock: receivers compare it with theirs (the injected clock only schedules).
            headers = signing.signed_headers(delivery["secret"], delivery["event_id"], int(time.time()), body)
            if is_broker_url(delivery["url"]):
                return delivery, *(await self._publish(delivery, body, headers))
            try:
                response = await self._client.post(delivery["url"], body, headers)
                status = response.status
                if not 200 <= status < 300:
                    error = response.text[:MAX_RESPONSE_ERROR]
            except PostError as exc:
                error = f"{type(exc).__name__}: {exc}"[:MAX_RESPONSE_ERROR]
        return delivery, status, error


    async def _publish(self, delivery: dict[str, Any], body: bytes,
                       headers: dict[str, str]) -> tuple[int | None, str | None]:
        """A ``nats:`` endpoint's delivery: acknowledged by JetStream counts as a 2xx."""
        if self.broker is None:
            return None, "NATS publication is off: events.nats_url is not set"
        try:
            await self.broker.publish(delivery["event_id"], body, headers)
        except BrokerError as exc:
            return None, str(exc)[:MAX_RESPONSE_ERROR]
        return 200, None


def _without_credentials(url: str) -> str:
    """A webhook URL fit for the log: any ``user:password@`` written into it is dropped."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
