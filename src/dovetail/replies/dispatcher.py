"""The webhook dispatcher: posts due outbox deliveries, signed, and records each outcome.

All state is in the outbox table, so a restarted dispatcher carries on where the last one stopped:
a delivery posted but not yet recorded when the process died is posted again (at-least-once), with
the same ``webhook-id`` (the event id) so receivers can drop the duplicate. Time comes from an
injectable clock and the retry delays from an injectable :class:`RetrySchedule`, which is how tests
drive a day of retries without waiting for it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx

from dovetail.log import get_logger

from . import netguard, signing
from .broker import BrokerError, NatsPublisher, is_broker_url
from .outbox import Outbox, RetrySchedule

log = get_logger("replies")

USER_AGENT = "Dovetail-Webhooks/1"
MAX_RESPONSE_ERROR = 500
CLAIM_BATCH = 50


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
        transport: httpx.AsyncBaseTransport | None = None,
        allow_private: bool | None = None,
        broker: NatsPublisher | None = None,
    ) -> None:
        self.outbox = outbox
        self.broker = broker  # publishes the deliveries of ``nats:`` endpoints (events.nats_url)
        self.schedule = schedule or RetrySchedule()
        self.clock = clock
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.lease = max(lease, timeout * 2)
        self.per_endpoint = max(1, concurrency)  # posts in flight to one endpoint
        self.window = max(self.per_endpoint, window)  # posts in flight in all
        self._endpoint_slots: dict[int, asyncio.Semaphore] = {}
        if not (outbox.allow_private if allow_private is None else allow_private):
            transport = netguard.GuardedTransport(transport)
        self._transport = transport
        self._wake: asyncio.Event | None = None
        self._client: httpx.AsyncClient | None = None

    def wake(self) -> None:
        """Look for due deliveries now (called in-process when an event was just stored)."""
        if self._wake is not None:
            self._wake.set()

    async def __aenter__(self) -> Dispatcher:
        self._client = httpx.AsyncClient(timeout=self.timeout, transport=self._transport, follow_redirects=False,
                                         headers={"user-agent": USER_AGENT})
        return self

    async def __aexit__(self, *exc: object) -> None:
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
                response = await self._client.post(delivery["url"], content=body, headers=headers)
                status = response.status_code
                if not 200 <= status < 300:
                    error = response.text[:MAX_RESPONSE_ERROR]
            except httpx.HTTPError as exc:
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
