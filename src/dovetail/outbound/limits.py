"""Per-tenant sending limits: a rate per minute and a daily quota of recipients (a counter row per
tenant and UTC day, shared by every process through the database).

The rate is a token bucket in process on a single node (SQLite). On a PostgreSQL cluster every node
draws from one budget: a counter row per tenant and UTC minute, taken by one conditional
``INSERT ... ON CONFLICT DO UPDATE ... WHERE messages < limit RETURNING``, so two nodes cannot both take
the last message of a minute (no row comes back: refused). A fixed window rather than a bucket: a burst
may straddle the turn of a minute (at most twice the rate over those two minutes), as Postfix's anvil
counts per time unit; in exchange one statement decides, with no lock held across nodes.

Both intakes ask the same limiter: submission answers ``451 4.7.1`` (rate) or ``452 4.7.0``
(quota), the HTTP API 429.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from dovetail.directory import lookups
from dovetail.directory.addresses import normalize_tenant
from dovetail.outbound.schema import send_counters, send_limits, send_rate


@dataclass(frozen=True)
class LimitExceeded:
    kind: str  # rate | quota
    message: str


@dataclass(frozen=True)
class TenantLimits:
    per_minute: int = 0  # 0: unlimited
    per_day: int = 0


def _day() -> str:
    return time.strftime("%Y-%m-%d", time.gmtime())


PRUNE_EVERY = 256  # shared minute rows older than a few minutes are deleted once per so many messages


class SendLimiter:
    def __init__(self, engine: Engine, cache_ttl: float = 10.0, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.cache_ttl = cache_ttl
        self.clock = clock  # wall clock: nodes agree on the minute
        self.shared = engine.dialect.name == "postgresql"
        self._taken = 0
        self._limits: dict[str, tuple[float, int, TenantLimits]] = {}
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def set_limits(self, tenant: str, per_minute: int = 0, per_day: int = 0) -> None:
        if per_minute < 0 or per_day < 0:
            raise ValueError("limits must not be negative")
        tenant = normalize_tenant(tenant)  # one bucket and one cache entry per tenant, however it is spelt
        with self.engine.begin() as conn:
            tid = self._tid(conn, tenant)
            if conn.execute(send_limits.update().where(send_limits.c.tenant_id == tid)
                            .values(per_minute=per_minute, per_day=per_day)).rowcount == 0:
                conn.execute(send_limits.insert().values(tenant_id=tid, per_minute=per_minute, per_day=per_day))
        with self._lock:
            self._limits.pop(tenant, None)
            self._buckets.pop(tenant, None)

    @staticmethod
    def _tid(conn: sa.Connection, tenant: str) -> int:
        tid = lookups.tenant_id(conn, tenant)
        if tid is None:
            raise ValueError(f"no such tenant {tenant!r}")
        return tid

    def limits(self, tenant: str) -> tuple[int, TenantLimits]:
        tenant = normalize_tenant(tenant)
        now = time.monotonic()
        with self._lock:
            hit = self._limits.get(tenant)
            if hit and now - hit[0] < self.cache_ttl:
                return hit[1], hit[2]
        with self.engine.connect() as conn:
            tid = self._tid(conn, tenant)
            row = conn.execute(sa.select(send_limits).where(send_limits.c.tenant_id == tid)).first()
        lim = TenantLimits(row.per_minute, row.per_day) if row else TenantLimits()
        with self._lock:
            self._limits[tenant] = (now, tid, lim)
        return tid, lim

    def sent_today(self, tenant: str) -> int:
        tid, _ = self.limits(tenant)
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(send_counters.c.messages).where(
                send_counters.c.tenant_id == tid, send_counters.c.day == _day())).scalar() or 0)

    def check(self, tenant: str, recipients: int = 1) -> LimitExceeded | None:
        """Whether ``recipients`` more may go now; does not consume (see ``consume``)."""
        tenant = normalize_tenant(tenant)
        tid, lim = self.limits(tenant)
        if lim.per_minute:
            tokens = self._shared_left(tid, lim) if self.shared else self._refill(tenant, lim)[0]
            if tokens < 1:
                return LimitExceeded("rate", f"sending rate limit of {lim.per_minute} messages per minute "
                                             "reached, try again later")
        if lim.per_day and self.sent_today(tenant) + recipients > lim.per_day:
            return LimitExceeded("quota", f"daily sending quota of {lim.per_day} recipients reached")
        return None

    def _refill(self, tenant: str, lim: TenantLimits) -> tuple[float, float]:
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(tenant, (float(lim.per_minute), now))
            tokens = min(float(lim.per_minute), tokens + (now - last) * lim.per_minute / 60.0)
            self._buckets[tenant] = (tokens, now)
            return tokens, now

    def _minute(self) -> int:
        return int(self.clock() // 60)

    def _shared_left(self, tid: int, lim: TenantLimits) -> float:
        """What the cluster has left of this minute's budget."""
        with self.engine.connect() as conn:
            used = conn.execute(sa.select(send_rate.c.messages).where(
                send_rate.c.tenant_id == tid, send_rate.c.minute == self._minute())).scalar()
        return float(lim.per_minute - (used or 0))

    def _take_shared(self, tid: int, lim: TenantLimits) -> bool:
        """Take one message of this minute's cluster-wide budget, in one statement; False when spent."""
        minute = self._minute()
        stmt = pg_insert(send_rate).values(tenant_id=tid, minute=minute, messages=1)
        stmt = stmt.on_conflict_do_update(index_elements=["tenant_id", "minute"],
                                          set_={"messages": send_rate.c.messages + 1},
                                          where=send_rate.c.messages < lim.per_minute)
        with self._lock:
            self._taken += 1
            prune = self._taken % PRUNE_EVERY == 0
        with self.engine.begin() as conn:
            taken = conn.execute(stmt.returning(send_rate.c.messages)).first() is not None
            if prune:
                conn.execute(send_rate.delete().where(send_rate.c.minute < minute - 2))
        return taken

    def consume(self, tenant: str, recipients: int) -> LimitExceeded | None:
        """Take one message and ``recipients`` from the limits, or say which limit refuses."""
        tenant = normalize_tenant(tenant)
        refused = self.check(tenant, recipients)
        if refused:
            return refused
        tid, lim = self.limits(tenant)
        if lim.per_minute and self.shared:
            if not self._take_shared(tid, lim):
                return LimitExceeded("rate", f"sending rate limit of {lim.per_minute} messages per minute "
                                             "reached, try again later")
        elif lim.per_minute:
            with self._lock:
                tokens, last = self._buckets[tenant]
                self._buckets[tenant] = (tokens - 1, last)
        if lim.per_day:
            day = _day()
            with self.engine.begin() as conn:
                n = conn.execute(send_counters.update().where(send_counters.c.tenant_id == tid,
                                                              send_counters.c.day == day)
                                 .values(messages=send_counters.c.messages + recipients)).rowcount
                if n == 0:
                    try:
                        with conn.begin_nested():
                            conn.execute(send_counters.insert().values(tenant_id=tid, day=day, messages=recipients))
                    except IntegrityError:
                        conn.execute(send_counters.update().where(send_counters.c.tenant_id == tid,
                                                                  send_counters.c.day == day)
                                     .values(messages=send_counters.c.messages + recipients))
        return None
