"""Per-minute mail-flow counters for the dashboard chart and ``/metrics``.

Services call :func:`record` on their hot path: it only adds to an in-memory dict under a lock.
A background thread started by :func:`start_flusher` (the web app starts one) writes the sums to
the ``mail_counters`` table every few seconds with one upsert per (minute, counter); the rows
are what the chart reads, so counts from several processes add up.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .schema import mail_counters

COUNTERS = ("received", "delivered", "deferred", "bounced", "rejected")
# Sender-authentication verdicts of the MX, one counter per method and result (``spf_pass``,
# ``dkim_fail``, ``dmarc_reject``...): in /metrics, not in the dashboard chart.
AUTH_RESULTS = {
    "spf": ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"),
    "dkim": ("pass", "fail", "neutral", "none", "policy", "temperror", "permerror"),
    "dmarc": ("pass", "fail", "none", "temperror", "permerror", "quarantine", "reject", "override"),
    "arc": ("pass", "fail", "none"),
}
AUTH_COUNTERS = tuple(f"{method}_{result}" for method, results in AUTH_RESULTS.items() for result in results)
# Content-filter decisions of the MX (milters and rspamd), in /metrics.
CONTENT_COUNTERS = ("milter_error", "milter_reject", "milter_tempfail", "milter_discard", "milter_quarantine",
                    "rspamd_error", "spam_reject", "spam_greylist", "spam_junk", "content_unfiltered")
# Abuse-defence decisions of the MX at its commands (``ratelimit_<what>``: a limit refused a connection,
# message or recipient; ``greylist_<reason>``: new/early deferred, retried/known/client passed): /metrics.
POLICY_DECISIONS = {
    "ratelimit": ("connection", "message", "recipient"),
    "greylist": ("new", "early", "retried", "known", "client"),
}
POLICY_COUNTERS = tuple(f"{kind}_{reason}" for kind, reasons in POLICY_DECISIONS.items() for reason in reasons)
_KNOWN = frozenset(COUNTERS + AUTH_COUNTERS + CONTENT_COUNTERS + POLICY_COUNTERS)

_lock = threading.Lock()
_pending: dict[tuple[int, str], int] = defaultdict(int)
_totals: dict[str, int] = defaultdict(int)  # since process start, for /metrics
_flusher: _Flusher | None = None


def record(counter: str, n: int = 1, *, at: float | None = None) -> None:
    """Count ``n`` events of ``counter`` (one of :data:`COUNTERS` or :data:`AUTH_COUNTERS`) in the current minute."""
    if counter not in _KNOWN:
        raise ValueError(f"unknown counter {counter!r}; one of {', '.join(COUNTERS)}")
    minute = int((time.time() if at is None else at) // 60)
    with _lock:
        _pending[(minute, counter)] += n
        _totals[counter] += n


def totals() -> dict[str, int]:
    """Counts recorded by this process since it started."""
    with _lock:
        return {name: _totals.get(name, 0) for name in COUNTERS}


def flush(engine: Engine) -> int:
    """Write pending counts to the database; returns how many rows were touched."""
    with _lock:
        batch = dict(_pending)
        _pending.clear()
    if not batch:
        return 0
    try:
        with engine.begin() as conn:
            for (minute, counter), n in batch.items():
                conn.execute(_upsert(engine, minute, counter, n))
    except Exception:
        with _lock:  # keep the counts for the next attempt
            for key, n in batch.items():
                _pending[key] += n
        raise
    return len(batch)


def auth_totals(engine: Engine, names: tuple[str, ...] = AUTH_COUNTERS) -> dict[str, int]:
    """Sums of the sender-authentication counters (or other ``names``) over every stored minute, for ``/metrics``."""
    out = dict.fromkeys(names, 0)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(mail_counters.c.counter, sa.func.sum(mail_counters.c.n))
                            .where(mail_counters.c.counter.in_(names)).group_by(mail_counters.c.counter))
        for counter, n in rows:
            out[counter] = int(n or 0)
    return out


def _upsert(engine: Engine, minute: int, counter: str, n: int) -> sa.Executable:
    from sqlalchemy.dialects import postgresql, sqlite

    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(mail_counters).values(minute=minute, counter=counter, n=n)
    return stmt.on_conflict_do_update(index_elements=["minute", "counter"],
                                      set_={"n": mail_counters.c.n + stmt.excluded.n})


def series(engine: Engine, minutes: int = 60, now: float | None = None) -> dict[str, list[int]]:
    """The last ``minutes`` minutes per counter, oldest first (zeros where nothing happened)."""
    end = int((time.time() if now is None else now) // 60)
    start = end - minutes + 1
    out = {name: [0] * minutes for name in COUNTERS}
    with engine.connect() as conn:
        rows = conn.execute(sa.select(mail_counters.c.minute, mail_counters.c.counter, mail_counters.c.n)
                            .where(mail_counters.c.minute >= start, mail_counters.c.minute <= end))
        for minute, counter, n in rows:
            if counter in out:
                out[counter][int(minute) - start] += int(n)
    return out


def since(engine: Engine, seconds: float, now: float | None = None) -> dict[str, int]:
    """Sums per counter over the last ``seconds`` (stored rows only)."""
    start = int(((time.time() if now is None else now) - seconds) // 60)
    out = dict.fromkeys(COUNTERS, 0)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(mail_counters.c.counter, sa.func.sum(mail_counters.c.n))
                            .where(mail_counters.c.minute >= start).group_by(mail_counters.c.counter))
        for counter, n in rows:
            if counter in out:
                out[counter] = int(n or 0)
    return out


def all_time(engine: Engine) -> dict[str, int]:
    """Sums per counter over every stored minute: what all processes flushed, for ``/metrics``."""
    out = dict.fromkeys(COUNTERS, 0)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(mail_counters.c.counter, sa.func.sum(mail_counters.c.n))
                            .group_by(mail_counters.c.counter))
        for counter, n in rows:
            if counter in out:
                out[counter] = int(n or 0)
    return out


class _Flusher(threading.Thread):
    def __init__(self, engine: Engine, interval: float) -> None:
        super().__init__(name="counters-flush", daemon=True)
        self.engine, self.interval = engine, interval
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            try:
                flush(self.engine)
            except Exception:  # noqa: BLE001 - a database hiccup must not end the thread
                from ..log import get_logger

                get_logger("web").warning("counter flush failed; will retry")


def start_flusher(engine: Engine, interval: float = 5.0) -> None:
    """Flush pending counts every ``interval`` seconds in a daemon thread (once per process)."""
    global _flusher
    with _lock:
        if _flusher is not None and _flusher.is_alive():
            return
        _flusher = _Flusher(engine, interval)
        _flusher.start()


def stop_flusher() -> None:
    """Stop the thread and write what is pending."""
    global _flusher
    with _lock:
        flusher, _flusher = _flusher, None
    if flusher is not None:
        flusher.stopping.set()
        flusher.join(timeout=5)
        flush(flusher.engine)
