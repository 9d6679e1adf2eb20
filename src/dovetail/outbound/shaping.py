"""Per-destination shaping of outbound delivery: concurrency, rate and throttling pauses.

The big mailbox providers throttle senders per connecting address: too many parallel sessions or
messages per minute and they answer ``421 4.7.0 Try again later`` (or ``454 4.7.0 Throttling`` from
a relay such as SES) and, pressed on, start to block. Postfix meets them with
``smtp_destination_concurrency_limit`` and ``smtp_destination_rate_delay`` per destination; this
module does the same for the delivery agent.

- **Destination.** A recipient domain by default (``example.org``). An override pattern groups
  mail under one name: ``gmail.com`` matches that recipient domain, ``*.google.com`` matches
  recipient domains under it *and* domains whose MX hosts are under it (Google-hosted domains all
  share the ``*.google.com`` limits, as they share Google's throttle). For relay transports the
  destination is the relay (``relay:[host]:port``), or a pattern matching its host name.
  Precedence: exact domain, then the longest ``*.`` suffix of the domain, then of its MX hosts.
- **Concurrency**: at most N SMTP sessions in flight per destination (a semaphore).
- **Rate**: N deliveries per time unit, enforced as Postfix's rate delay: successive deliveries to
  one destination start at least ``unit/N`` apart (a token bucket one token deep, GCRA style), and a
  delivery waits for its turn. The wait is bounded by ``outbound.rate_wait_max``: a delivery whose
  turn lies further out is deferred at once with ``4.7.0 rate limited, next try in N s`` and the
  queue's backoff brings it back, so a slow destination cannot hold every delivery slot of the
  queue manager.
- **Throttling pause**: a reply ``421`` or ``4.7.x`` (temporary) from the destination pauses it
  for ``outbound.throttle_pause`` seconds, doubling each time it throttles again up to
  ``outbound.throttle_pause_max``; while paused its mail is deferred without a connection
  (``4.4.5``, the reason naming the pause). The first delivery after the pause is the probe; its
  success ends the pause and resets the interval. One log line when a pause starts, one when it ends.

**Across processes.** The state lives in the delivery agent of each queue-manager process. The
configured concurrency and rate are totals for the machine: with ``processes`` queue managers each
takes its share (concurrency divided and rounded up, at least 1; the rate divided), so the sum
stays at the configured limit. Pauses are learnt by each process on its own (every process sees the
421 at its next attempt).

**Metrics.** Counters of delivered/deferred/bounced recipients per destination, the paused
destinations and the sessions in flight go to a small JSON file per process
(:meth:`Shaper.publish`), which ``/metrics`` in the web process merges (:func:`merge`). Cardinality
is bounded: :data:`TRACKED_MAX` destinations are counted by name, the rest as ``other``, and
:data:`TOP_N` named series are exported, the busiest, the others summed into ``other``.

No library is used for the token bucket or the pauses: both are a few lines over a monotonic
clock, and they must share the destination keys and the state of the semaphore beside them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dovetail.config import Config, parse_rate
from dovetail.log import get_logger
from dovetail.status import read_json_dir

log = get_logger("smtp")

TRACKED_MAX = 1000  # destinations counted by name in one process; the rest count as "other"
STATES_MAX = 10000  # destinations whose state is kept before the idle ones are forgotten
TOP_N = 20  # named destinations exported to /metrics; the rest are summed into "other"
OTHER = "other"
OUTCOMES = ("delivered", "deferred", "bounced")
# Outcomes of DANE (RFC 7672) per MX connection attempt, when ``outbound.dane`` is on: the host's
# certificate matched its TLSA records, did not (or TLS was not offered, or the TLSA lookup failed),
# or the host has no usable secure TLSA records.
DANE_OUTCOMES = ("verified", "failed", "none")


@dataclass(frozen=True)
class Limits:
    """One destination's limits: sessions in flight, and ``rate`` as (messages, seconds) or None."""

    concurrency: int
    rate: tuple[int, float] | None = None

    @property
    def interval(self) -> float:
        """Seconds between the starts of two deliveries (0: no rate limit)."""
        return self.rate[1] / self.rate[0] if self.rate else 0.0


@dataclass(frozen=True)
class ShapingConfig:
    """Defaults, overrides by pattern, and the pause and wait bounds (config keys ``outbound.*``)."""

    concurrency: int = 20
    rate: tuple[int, float] | None = None
    overrides: Mapping[str, Limits] = field(default_factory=dict)
    rate_wait_max: float = 10.0
    pause: float = 60.0
    pause_max: float = 3600.0
    processes: int = 1

    @classmethod
    def from_config(cls, cfg: Config, processes: int = 1) -> ShapingConfig:
        default_rate = parse_rate(cfg["outbound.destination_rate"])
        overrides = {}
        for pattern, entry in (cfg["outbound.destinations"] or {}).items():
            overrides[pattern] = Limits(int(entry.get("concurrency", cfg["outbound.destination_concurrency"])),
                                        parse_rate(entry["rate"]) if "rate" in entry else default_rate)
        return cls(concurrency=int(cfg["outbound.destination_concurrency"]), rate=default_rate,
                   overrides=overrides, rate_wait_max=float(cfg["outbound.rate_wait_max"]),
                   pause=float(cfg["outbound.throttle_pause"]), pause_max=float(cfg["outbound.throttle_pause_max"]),
                   processes=max(1, processes))

    def share(self, limits: Limits) -> Limits:
        """This process's share of ``limits`` when ``processes`` queue managers deliver side by side."""
        if self.processes == 1:
            return limits
        rate = (limits.rate[0], limits.rate[1] * self.processes) if limits.rate else None
        return Limits(max(1, math.ceil(limits.concurrency / self.processes)), rate)

    def destination(self, domain: str, mx_hosts: Iterable[str] = ()) -> tuple[str, Limits]:
        """The destination name and its limits for mail to ``domain`` whose MX hosts are ``mx_hosts``
        (a relay's host name for relay transports; ``default`` names the destination otherwise)."""
        name = self.match(domain, mx_hosts)
        if name is not None:
            return name, self.share(self.overrides[name])
        return domain, self.share(Limits(self.concurrency, self.rate))

    def for_relay(self, host: str, port: int) -> tuple[str, Limits]:
        """The destination of a relay transport: a pattern matching its host name, else the relay."""
        name = self.match(host)
        if name is not None:
            return name, self.share(self.overrides[name])
        return f"relay:[{host}]:{port}", self.share(Limits(self.concurrency, self.rate))

    def match(self, domain: str, mx_hosts: Iterable[str] = ()) -> str | None:
        """The override pattern that applies, or None (see the module docstring for precedence)."""
        domain = domain.lower().rstrip(".")
        if domain in self.overrides:
            return domain
        for name in (domain, *(h.lower().rstrip(".") for h in mx_hosts)):
            best = None
            for pattern in self.overrides:
                if pattern.startswith("*.") and name.endswith(pattern[1:]):
                    if best is None or len(pattern) > len(best):
                        best = pattern
            if best is not None:
                return best
        return None


class RateLimited(Exception):
    """The destination's next free turn is further out than the wait allowed."""

    def __init__(self, destination: str, wait: float) -> None:
        super().__init__(f"rate limited, next try in {math.ceil(wait)} s (destination {destination})")
        self.wait = wait


class Paused(Exception):
    """The destination is paused after throttling us."""

    def __init__(self, destination: str, left: float, why: str) -> None:
        super().__init__(f"destination {destination} is paused for another {math.ceil(left)} s after it "
                         f"throttled delivery: {why}")


@dataclass
class _State:
    limits: Limits
    slot: asyncio.Semaphore
    next_start: float = 0.0
    paused_until: float = 0.0
    pause_length: float = 0.0  # 0: not paused and not backing off
    pause_reason: str = ""
    active: int = 0


class Shaper:
    """The per-destination state of one delivery agent (one event loop)."""

    def __init__(self, config: ShapingConfig | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config or ShapingConfig()
        self.clock = clock
        self._states: dict[str, _State] = {}
        self._counts: dict[str, dict[str, int]] = {}
        self.dane_counts: dict[str, int] = dict.fromkeys(DANE_OUTCOMES, 0)

    def _state(self, destination: str, limits: Limits) -> _State:
        state = self._states.get(destination)
        if state is None:
            if len(self._states) >= STATES_MAX:
                self._forget_idle()
            state = self._states[destination] = _State(limits, asyncio.Semaphore(limits.concurrency))
        return state

    def _forget_idle(self) -> None:
        """Drop the state of destinations with nothing to remember (no session, turn, pause or
        backoff), so a process that mails many domains does not keep one entry per domain forever."""
        now = self.clock()
        for name, state in list(self._states.items()):
            if (not state.active and not state.slot.locked() and state.next_start <= now
                    and not state.pause_length):
                del self._states[name]

    def paused(self, destination: str) -> float:
        """Seconds left of the destination's pause (0: not paused)."""
        state = self._states.get(destination)
        return max(0.0, state.paused_until - self.clock()) if state else 0.0

    @contextlib.asynccontextmanager
    async def session(self, destination: str, limits: Limits) -> AsyncIterator[None]:
        """Hold one of the destination's session slots and its rate turn for one delivery.

        Raises :class:`Paused` (before and after waiting for a slot) or :class:`RateLimited`.
        """
        state = self._state(destination, limits)
        self._check_pause(destination, state)
        async with state.slot:
            self._check_pause(destination, state)
            interval = state.limits.interval
            if interval:
                now = self.clock()
                start = max(now, state.next_start)
                if start - now > self.config.rate_wait_max:
                    raise RateLimited(destination, start - now)
                state.next_start = start + interval
                if start > now:
                    await asyncio.sleep(start - now)
                self._check_pause(destination, state)
            state.active += 1
            try:
                yield
            finally:
                state.active -= 1

    def _check_pause(self, destination: str, state: _State) -> None:
        left = state.paused_until - self.clock()
        if left > 0:
            raise Paused(destination, left, state.pause_reason)

    def throttled(self, destination: str, reason: str) -> None:
        """The destination answered 421/4.7.x: pause it (doubling), unless a pause already runs."""
        state = self._states.get(destination)
        if state is None:
            return
        now = self.clock()
        if state.paused_until > now:
            return  # sessions in flight when the pause began report the same throttling
        cfg = self.config
        state.pause_length = cfg.pause if not state.pause_length else min(state.pause_length * 2, cfg.pause_max)
        state.paused_until = now + state.pause_length
        state.pause_reason = reason
        log.warning(f"destination {destination} paused for {state.pause_length:g}s: {reason}",
                    destination=destination, pause=f"{state.pause_length:g}s")

    def succeeded(self, destination: str) -> None:
        """A delivery to the destination went through: a pause, or the backoff after one, ends."""
        state = self._states.get(destination)
        if state is None or not state.pause_length:
            return
        log.info(f"destination {destination} resumed after a pause of {state.pause_length:g}s",
                 destination=destination)
        state.pause_length = state.paused_until = 0.0
        state.pause_reason = ""

    # --- metrics -------------------------------------------------------------------------------

    def count(self, destination: str, outcome: str, n: int = 1) -> None:
        """Count ``n`` recipients of ``outcome`` (delivered, deferred, bounced) for the destination."""
        if destination not in self._counts and len(self._counts) >= TRACKED_MAX:
            destination = OTHER
        row = self._counts.setdefault(destination, dict.fromkeys(OUTCOMES, 0))
        row[outcome] += n

    def snapshot(self) -> dict[str, Any]:
        """Counters (top :data:`TOP_N` + other), pauses and sessions in flight, as ``publish`` writes them."""
        now = self.clock()
        return {
            "pid": os.getpid(),
            "time": time.time(),
            "counts": _bounded(self._counts),
            "paused": {d: round(s.paused_until - now, 1) for d, s in sorted(self._states.items())
                       if s.paused_until > now},
            "sessions": {d: s.active for d, s in sorted(self._states.items()) if s.active},
            "dane": dict(self.dane_counts),
        }

    def publish(self, path: Path) -> None:
        """Write :meth:`snapshot` to ``path`` atomically (read by ``/metrics`` in the web process)."""
        tmp = path.with_suffix(".tmp")
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(self.snapshot()))
            os.replace(tmp, path)


def _bounded(counts: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, int]]:
    """The :data:`TOP_N` destinations with the most recipients by name, the rest summed as ``other``."""
    ranked = sorted((d for d in counts if d != OTHER), key=lambda d: (-sum(counts[d].values()), d))
    out = {d: {o: int(counts[d].get(o, 0)) for o in OUTCOMES} for d in ranked[:TOP_N]}
    rest = [counts[d] for d in ranked[TOP_N:]] + ([counts[OTHER]] if OTHER in counts else [])
    if rest:
        out[OTHER] = {o: sum(int(r.get(o, 0)) for r in rest) for o in OUTCOMES}
    return out


def merge(snapshots: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Several processes' snapshots as one: counters and sessions summed, the longest pause kept,
    cardinality bounded again."""
    counts: dict[str, dict[str, int]] = {}
    paused: dict[str, float] = {}
    sessions: dict[str, int] = {}
    dane = dict.fromkeys(DANE_OUTCOMES, 0)
    for snap in snapshots:
        for outcome in DANE_OUTCOMES:
            value = (snap.get("dane") or {}).get(outcome, 0)
            dane[outcome] += value if isinstance(value, int) and value >= 0 else 0
        for dest, row in (snap.get("counts") or {}).items():
            total = counts.setdefault(str(dest), dict.fromkeys(OUTCOMES, 0))
            for o in OUTCOMES:
                value = row.get(o, 0) if isinstance(row, dict) else 0
                total[o] += value if isinstance(value, int) and value >= 0 else 0
        for dest, left in (snap.get("paused") or {}).items():
            if isinstance(left, int | float):
                paused[str(dest)] = max(paused.get(str(dest), 0.0), float(left))
        for dest, n in (snap.get("sessions") or {}).items():
            if isinstance(n, int):
                sessions[str(dest)] = sessions.get(str(dest), 0) + n
    return {"counts": _bounded(counts), "paused": _top(paused), "sessions": _top(sessions), "dane": dane}


def _top(values: Mapping[str, float]) -> dict[str, Any]:
    ranked = sorted(values, key=lambda d: (-values[d], d))
    out: dict[str, Any] = {d: values[d] for d in ranked[:TOP_N]}
    if len(ranked) > TOP_N:
        out[OTHER] = sum(values[d] for d in ranked[TOP_N:])
    return out


def read_published(directory: Path, max_files: int = 64, max_bytes: int = 256 * 1024) -> list[dict[str, Any]]:
    """The snapshots under ``directory`` whose process is still alive (a dead process's counts are gone
    with it, as a restarted exporter's)."""
    return [data for data in read_json_dir(directory, max_files, max_bytes) if _alive(data.get("pid"))]


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True
    return True
