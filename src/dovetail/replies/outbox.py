"""Webhook endpoints and the durable outbox of deliveries.

An event is written in the same transaction as the reply it reports, together with one
``webhook_deliveries`` row per subscribed endpoint: once a reply is stored its webhooks cannot be
lost. The dispatcher claims due rows with a lease (so two dispatchers never post the same delivery at
once, and a crashed one's claims expire; one stopped mid-batch gives its claims back) — or, as the sole
dispatcher of an SQLite database, reads them and keeps its claims in memory — posts, and
records the outcome: delivered, retried later on the :class:`RetrySchedule`, ``gone`` on HTTP 410
(the endpoint is disabled, as Standard Webhooks asks), or ``dead`` after the last try.
"""

from __future__ import annotations

import random
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from dovetail.dbrows import inserted_id
from dovetail.dbwriter import write_transaction
from dovetail.sealing import Sealer, SealError

from . import netguard, signing
from .broker import NATS_ENDPOINT, is_broker_url
from .dbretry import retry
from .registry import RegistryError, tenant_id
from .schema import events, webhook_deliveries, webhook_endpoints

SECRET_PURPOSE = "webhook signing secret"

EVENT_TYPES = ("reply.received", "reply.auto", "reply.unmatched", "bounce.hard", "bounce.soft", "unsubscribe",
               "complaint", "reply.spam",
               # delivery outcomes (dovetail.replies.outcomes)
               "message.delivered", "message.deferred", "message.bounced", "message.suppressed",
               "message.complained")
PENDING, DELIVERED, GONE, DEAD = "pending", "delivered", "gone", "dead"


@dataclass(frozen=True)
class RetrySchedule:
    """Delay before each attempt, from the event: immediately, then backing off over more than a day."""

    delays: tuple[float, ...] = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)

    @property
    def attempts(self) -> int:
        return len(self.delays)

    @property
    def total(self) -> float:
        return float(sum(self.delays))

    def after(self, attempts_done: int) -> float | None:
        """Seconds to wait after ``attempts_done`` failed attempts; ``None`` when none are left."""
        if attempts_done >= len(self.delays):
            return None
        return float(self.delays[attempts_done])


def _check_url(url: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or len(url) > 2000:
        raise RegistryError(f"not an http(s) URL: {url!r}")
    return url.strip()


def _check_types(types: list[str] | None) -> str:
    if not types or types == ["*"]:
        return "*"
    bad = [t for t in types if t not in EVENT_TYPES]
    if bad:
        raise RegistryError(f"unknown event types {', '.join(bad)} (known: {', '.join(EVENT_TYPES)})")
    return ",".join(dict.fromkeys(types))


def _endpoint(row: Any) -> dict[str, Any]:
    return {"id": row.id, "url": row.url, "event_types": row.event_types.split(","),
            "description": row.description, "enabled": row.enabled,
            "created_at": row.created_at.isoformat() if row.created_at else None}


class Outbox:
    """Endpoint management and delivery bookkeeping; the dispatcher drives the posting."""

    def __init__(self, engine: Engine, *, allow_private: bool = False, sealer: Sealer | None = None,
                 broker: bool = False) -> None:
        self.engine = engine
        self.broker = broker  # events.nats_url is set: endpoints may be ``nats:`` (see .broker)
        self.allow_private = allow_private  # replies.webhook_allow_private: loopback/private targets allowed
        self.sealer = sealer  # signing secrets sealed at rest (dovetail.sealing) when given

    # --- endpoints -------------------------------------------------------------------------------

    def add_endpoint(self, tenant: str | int, url: str, event_types: list[str] | None = None,
                     description: str = "", secret: str | None = None) -> dict[str, Any]:
        """A new endpoint; the answer holds its ``whsec_`` secret (shown once)."""
        if is_broker_url(url):
            if not self.broker:
                raise RegistryError("nats: endpoints need the operator's NATS server: set events.nats_url")
            url = NATS_ENDPOINT
        else:
            url = _check_url(url)
        if not self.allow_private and url != NATS_ENDPOINT:
            try:
                netguard.check_url(url)
            except netguard.BlockedTarget as exc:
                raise RegistryError(str(exc)) from None
        types = _check_types(event_types)
        secret = secret or signing.new_secret()
        signing.sign(secret, "x", 0, b"")  # refuses a malformed secret
        stored = self.sealer.seal(secret, SECRET_PURPOSE) if self.sealer is not None else secret
        with self.engine.begin() as conn:
            tid = tenant_id(conn, tenant)
            result = conn.execute(webhook_endpoints.insert().values(
                tenant_id=tid, url=url, secret=stored, event_types=types, description=description[:2000]))
            eid = inserted_id(result)
            row = conn.execute(webhook_endpoints.select().where(webhook_endpoints.c.id == eid)).one()
        return {**_endpoint(row), "secret": secret}

    def endpoints(self, tenant: str | int) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            tid = tenant_id(conn, tenant)
            rows = conn.execute(webhook_endpoints.select().where(webhook_endpoints.c.tenant_id == tid)
                                .order_by(webhook_endpoints.c.id))
            return [_endpoint(r) for r in rows]

    def remove_endpoint(self, tenant: str | int, endpoint_id: int) -> bool:
        with self.engine.begin() as conn:
            tid = tenant_id(conn, tenant)
            done = conn.execute(webhook_endpoints.delete().where(webhook_endpoints.c.tenant_id == tid,
                                                                 webhook_endpoints.c.id == endpoint_id))
            return done.rowcount > 0

    def set_enabled(self, tenant: str | int, endpoint_id: int, enabled: bool) -> bool:
        with self.engine.begin() as conn:
            tid = tenant_id(conn, tenant)
            done = conn.execute(webhook_endpoints.update().where(
                webhook_endpoints.c.tenant_id == tid, webhook_endpoints.c.id == endpoint_id).values(enabled=enabled))
            return done.rowcount > 0

    # --- enqueue (inside the pipeline's transaction) ---------------------------------------------

    @staticmethod
    def enqueue(conn: Connection, tid: int, event_id: str, event_type: str, now: float | None = None) -> int:
        """One pending delivery per enabled endpoint of the tenant subscribed to ``event_type``."""
        rows = Outbox.delivery_rows(Outbox.subscriptions(conn, tid), event_id, event_type, now)
        if rows:
            conn.execute(webhook_deliveries.insert(), rows)
        return len(rows)

    @staticmethod
    def subscriptions(conn: Connection, tid: int) -> list[tuple[int, str]]:
        """(endpoint id, subscribed event types) of the tenant's enabled endpoints."""
        return [(r.id, r.event_types) for r in conn.execute(
            sa.select(webhook_endpoints.c.id, webhook_endpoints.c.event_types).where(
                webhook_endpoints.c.tenant_id == tid, webhook_endpoints.c.enabled.is_(True)))]

    @staticmethod
    def delivery_rows(subscriptions: list[tuple[int, str]], event_id: str, event_type: str,
                      now: float | None = None) -> list[dict[str, Any]]:
        """The pending ``webhook_deliveries`` rows of one event, for an INSERT of many rows at once."""
        now = time.time() if now is None else now
        return [{"event_id": event_id, "endpoint_id": endpoint_id, "status": PENDING, "next_attempt_at": now}
                for endpoint_id, types in subscriptions if types == "*" or event_type in types.split(",")]

    # --- dispatcher side ---------------------------------------------------------------------------

    def claim_due(self, now: float, limit: int = 50, lease: float = 60.0,
                  skip_endpoints: list[int] | None = None) -> list[dict[str, Any]]:
        """Due deliveries, each leased to the caller for ``lease`` seconds; none for ``skip_endpoints``
        (endpoints the caller is already posting to as fast as it may)."""
        return retry(lambda: self._claim_due(now, limit, lease, skip_endpoints or []))

    def _claim_due(self, now: float, limit: int, lease: float, skip: list[int]) -> list[dict[str, Any]]:
        with write_transaction(self.engine) as conn:
            claimed = self._claim_in(conn, now, limit, lease, skip)
        return self._open_secrets(claimed)

    def _claim_in(self, conn: Connection, now: float, limit: int, lease: float,
                  skip: list[int]) -> list[dict[str, Any]]:
        enabled = sa.select(webhook_endpoints.c.id).where(webhook_endpoints.c.enabled.is_(True))
        if skip:
            enabled = enabled.where(webhook_endpoints.c.id.not_in(skip))
        free = sa.or_(webhook_deliveries.c.locked_until.is_(None), webhook_deliveries.c.locked_until < now)
        due = (sa.select(webhook_deliveries.c.id).where(
            webhook_deliveries.c.status == PENDING, webhook_deliveries.c.next_attempt_at <= now,
            webhook_deliveries.c.endpoint_id.in_(enabled), free)
            .order_by(webhook_deliveries.c.next_attempt_at, webhook_deliveries.c.id).limit(limit)
            # PostgreSQL: dispatchers on several nodes claim side by side, each skipping the rows another
            # is claiming instead of queuing behind it (SQLite has one writer and renders no lock).
            .with_for_update(of=webhook_deliveries, skip_locked=True))
        # A lease value of our own marks the rows this claim won (another dispatcher's differs).
        mark = now + lease + random.random() / 1000
        ids = conn.execute(due).scalars().all()
        if not ids:
            return []
        conn.execute(webhook_deliveries.update().where(
            webhook_deliveries.c.id.in_(ids), webhook_deliveries.c.status == PENDING, free)
            .values(locked_until=mark))
        rows = conn.execute(
            self._delivery_columns()
            .where(webhook_deliveries.c.id.in_(ids), webhook_deliveries.c.locked_until == mark)
            .order_by(webhook_deliveries.c.id)).all()
        return [dict(r._mapping) | {"lease": mark} for r in rows]

    def peek_due(self, now: float, limit: int = 50, skip_endpoints: list[int] | None = None,
                 exclude: Collection[int] = ()) -> list[dict[str, Any]]:
        """Due deliveries, read without a lease: for the sole dispatcher of an SQLite database, which
        keeps what it has in hand (``exclude``) in memory instead of writing leases under the one write
        lock. Deliveries another dispatcher leased are still left alone until their lease runs out."""
        enabled = sa.select(webhook_endpoints.c.id).where(webhook_endpoints.c.enabled.is_(True))
        if skip_endpoints:
            enabled = enabled.where(webhook_endpoints.c.id.not_in(skip_endpoints))
        query = (self._delivery_columns().where(
            webhook_deliveries.c.status == PENDING, webhook_deliveries.c.next_attempt_at <= now,
            webhook_deliveries.c.endpoint_id.in_(enabled),
            sa.or_(webhook_deliveries.c.locked_until.is_(None), webhook_deliveries.c.locked_until < now))
            .order_by(webhook_deliveries.c.next_attempt_at, webhook_deliveries.c.id).limit(limit + len(exclude)))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        due = [dict(r._mapping) | {"lease": None} for r in rows if r.id not in exclude][:limit]
        return self._open_secrets(due)

    @staticmethod
    def _delivery_columns() -> sa.Select[Any]:
        """What the dispatcher needs to post a delivery: its row, its endpoint and its event's payload."""
        return (sa.select(webhook_deliveries.c.id, webhook_deliveries.c.attempts, webhook_deliveries.c.event_id,
                          webhook_deliveries.c.endpoint_id, webhook_deliveries.c.created_at,
                          webhook_endpoints.c.url, webhook_endpoints.c.secret, webhook_endpoints.c.enabled,
                          events.c.payload)
                .join(webhook_endpoints, webhook_endpoints.c.id == webhook_deliveries.c.endpoint_id)
                .join(events, events.c.id == webhook_deliveries.c.event_id))

    def _open_secrets(self, claimed: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if self.sealer is not None:
            for delivery in claimed:
                try:
                    delivery["secret"] = self.sealer.open(delivery["secret"], SECRET_PURPOSE)
                except SealError:
                    delivery["secret"] = None  # the dispatcher records why instead of posting unsigned
        return claimed

    def release(self, deliveries: list[dict[str, Any]]) -> int:
        """Give up the leases of claimed deliveries whose outcome will not be recorded (the dispatcher is
        stopping mid-batch), so that the next dispatcher posts them at once instead of after the lease."""
        return retry(lambda: self._release(deliveries))

    def _release(self, deliveries: list[dict[str, Any]]) -> int:
        released = 0
        with write_transaction(self.engine) as conn:
            for delivery in deliveries:
                done = conn.execute(webhook_deliveries.update().where(
                    webhook_deliveries.c.id == delivery["id"], webhook_deliveries.c.status == PENDING,
                    webhook_deliveries.c.locked_until == delivery["lease"]).values(locked_until=None))
                released += done.rowcount
        return released

    def next_due(self) -> float | None:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.min(webhook_deliveries.c.next_attempt_at)).where(
                webhook_deliveries.c.status == PENDING)).scalar()

    def record(self, delivery: dict[str, Any], *, now: float, status_code: int | None, error: str | None,
               schedule: RetrySchedule) -> str:
        """Store one attempt's outcome; returns the delivery's new status."""
        return self.record_many([(delivery, status_code, error)], now=now, schedule=schedule)[0]

    def record_many(self, outcomes: list[tuple[dict[str, Any], int | None, str | None]], *, now: float,
                    schedule: RetrySchedule) -> list[str]:
        """Store the outcomes of a batch of attempts in one transaction (one commit, not one per post)."""
        return retry(lambda: self._record_many(outcomes, now, schedule))

    def record_and_claim(self, outcomes: list[tuple[dict[str, Any], int | None, str | None]], *, now: float,
                         schedule: RetrySchedule, limit: int, lease: float = 60.0,
                         skip_endpoints: list[int] | None = None) -> tuple[list[str], list[dict[str, Any]]]:
        """``record_many`` and then ``claim_due`` (when ``limit`` > 0) in one transaction: the dispatcher
        takes the database's write lock once per wave of finished posts instead of twice. With SQLite's
        one writer, shared with the processes storing replies, each acquisition can wait behind their
        commits, so halving them is what keeps the dispatcher in step under load."""
        def run() -> tuple[list[str], list[dict[str, Any]]]:
            with write_transaction(self.engine) as conn:
                statuses = self._record_in(conn, outcomes, now, schedule)
                claimed = self._claim_in(conn, now, limit, lease, skip_endpoints or []) if limit > 0 else []
            return statuses, self._open_secrets(claimed)
        return retry(run)

    def _record_many(self, outcomes: list[tuple[dict[str, Any], int | None, str | None]], now: float,
                     schedule: RetrySchedule) -> list[str]:
        with write_transaction(self.engine) as conn:
            return self._record_in(conn, outcomes, now, schedule)

    def _record_in(self, conn: Connection, outcomes: list[tuple[dict[str, Any], int | None, str | None]],
                   now: float, schedule: RetrySchedule) -> list[str]:
        """One UPDATE statement for the finished deliveries and one for those to retry, each run for all
        rows at once (``executemany``): a statement built per row cost more than the post it records."""
        statuses = []
        finished: list[dict[str, Any]] = []
        retried: list[dict[str, Any]] = []
        gone: list[int] = []
        for delivery, status_code, error in outcomes:
            attempts = delivery["attempts"] + 1
            row: dict[str, Any] = {"d_id": delivery["id"], "d_attempts": attempts, "d_now": now,
                                   "d_status_code": status_code, "d_error": (error or "")[:2000] or None}
            if status_code is not None and 200 <= status_code < 300:
                status = DELIVERED
            elif status_code == 410:
                status = GONE
                gone.append(delivery["endpoint_id"])
            else:
                delay = schedule.after(attempts)
                status = DEAD if delay is None else PENDING
                if delay is not None:
                    row["d_next"] = now + delay
            if status == PENDING:
                retried.append(row)
            else:
                finished.append(row | {"d_status": status})
            statuses.append(status)
        if finished:
            conn.execute(_RECORD_FINISHED, finished)
        if retried:
            conn.execute(_RECORD_RETRY, retried)
        if gone:
            conn.execute(webhook_endpoints.update().where(webhook_endpoints.c.id.in_(sorted(set(gone))))
                         .values(enabled=False))
        return statuses

    # --- operator views -----------------------------------------------------------------------------

    def deliveries(self, tenant: str | int, *, status: str | None = None, endpoint_id: int | None = None,
                   limit: int = 100) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            tid = tenant_id(conn, tenant)
            q = (sa.select(webhook_deliveries.c.id, webhook_deliveries.c.event_id, events.c.type,
                           webhook_deliveries.c.endpoint_id, webhook_endpoints.c.url, webhook_deliveries.c.status,
                           webhook_deliveries.c.attempts, webhook_deliveries.c.next_attempt_at,
                           webhook_deliveries.c.last_status, webhook_deliveries.c.last_error)
                 .join(webhook_endpoints, webhook_endpoints.c.id == webhook_deliveries.c.endpoint_id)
                 .join(events, events.c.id == webhook_deliveries.c.event_id)
                 .where(webhook_endpoints.c.tenant_id == tid))
            if status:
                q = q.where(webhook_deliveries.c.status == status)
            if endpoint_id is not None:
                q = q.where(webhook_deliveries.c.endpoint_id == endpoint_id)
            rows = conn.execute(q.order_by(webhook_deliveries.c.id.desc()).limit(min(limit, 10_000))).all()
            return [dict(r._mapping) for r in rows]

    def redeliver(self, tenant: str | int, delivery_id: int, now: float | None = None) -> bool:
        """Queue a delivery again (dead, gone or delivered), with a fresh retry budget."""
        now = time.time() if now is None else now
        with self.engine.begin() as conn:
            tid = tenant_id(conn, tenant)
            owned = sa.select(webhook_endpoints.c.id).where(webhook_endpoints.c.tenant_id == tid)
            done = conn.execute(webhook_deliveries.update().where(
                webhook_deliveries.c.id == delivery_id, webhook_deliveries.c.endpoint_id.in_(owned))
                .values(status=PENDING, attempts=0, next_attempt_at=now, locked_until=None))
            return done.rowcount > 0


def _record_statement(**values: Any) -> sa.Update:
    """An attempt's outcome, with the row's values bound per delivery (see ``Outbox._record_in``)."""
    return (webhook_deliveries.update().where(webhook_deliveries.c.id == sa.bindparam("d_id"))
            .values(attempts=sa.bindparam("d_attempts"), last_attempt_at=sa.bindparam("d_now"),
                    last_status=sa.bindparam("d_status_code"), last_error=sa.bindparam("d_error"),
                    locked_until=None, **values))


_RECORD_FINISHED = _record_statement(status=sa.bindparam("d_status"))  # delivered, gone or dead
_RECORD_RETRY = _record_statement(next_attempt_at=sa.bindparam("d_next"))  # still pending, tried again later
