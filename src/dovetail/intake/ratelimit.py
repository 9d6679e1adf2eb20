"""Per-client rate limits of the MX, shared by its worker processes (Postfix's anvil-based limits).

Connections, messages (MAIL) and recipients (RCPT) per minute are counted per client IP and per client
network (/24 for IPv4, /64 for IPv6), as ``smtpd_client_connection_rate_limit``,
``smtpd_client_message_rate_limit`` and ``smtpd_client_recipient_rate_limit`` do. Were they counted per
process, a client would get one allowance per worker; so the counts live in a small SQLite file in the
data directory's ``run/`` (``mx-rates.sqlite``, a :mod:`dovetail.rundb` file, as the login ledger).

Each count is a row per (key, minute): the rate is the current minute's count plus the previous minute's
weighted by how much of it still lies within the last sixty seconds (a sliding window approximated from
two fixed ones, so storage is two rows per key and a prune of older minutes keeps the file bounded).
Over a limit the reply is Postfix's: ``421 4.7.0`` for connections (and the connection is closed),
``450 4.7.1`` for messages and recipients. A hand-written counter rather than a library: the limits
libraries on PyPI count in one process or in Redis, and the project shares state through ``run/`` files.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..config import Config
from ..datadir import Layout
from ..log import get_logger
from ..mailauth.networks import Network, client_network, in_networks, parse_networks
from ..rundb import open_run_db, writing
from ..smtp.reply import Reply

log = get_logger("smtpd")
RATES_FILE = "mx-rates.sqlite"
MAX_ROWS = 500_000  # a flood from more addresses than this forgets its oldest counts
PRUNE_EVERY = 512
WINDOW = 60
EXEMPT_KEPT = 4096  # client addresses whose exemption is remembered

_SCHEMA = """
CREATE TABLE IF NOT EXISTS hit (key TEXT NOT NULL, minute INTEGER NOT NULL, n INTEGER NOT NULL,
                                PRIMARY KEY (key, minute));
CREATE INDEX IF NOT EXISTS hit_minute ON hit(minute);
"""


class Windows(Protocol):
    def hit(self, keys: tuple[str, ...], now: float) -> dict[str, float]: ...

    def peek(self, keys: tuple[str, ...], now: float) -> dict[str, float]: ...


def _rate(current: int, previous: int, now: float) -> float:
    return current + previous * (1.0 - (now % WINDOW) / WINDOW)


class SqliteWindows:
    """Per-minute counts in a file the MX workers share (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._writes = 0
        self.db = open_run_db(self.path, _SCHEMA)

    def _read(self, keys: tuple[str, ...], minute: int, now: float) -> dict[str, float]:
        out = {}
        for key in keys:
            rows = dict(self.db.execute("SELECT minute, n FROM hit WHERE key=? AND minute>=?", (key, minute - 1)))
            out[key] = _rate(rows.get(minute, 0), rows.get(minute - 1, 0), now)
        return out

    def hit(self, keys: tuple[str, ...], now: float) -> dict[str, float]:
        """Count one event for each key; the rates per minute including it."""
        minute = int(now // WINDOW)
        with self._lock, writing(self.db) as db:
            db.executemany("INSERT INTO hit VALUES (?, ?, 1) ON CONFLICT (key, minute) DO UPDATE SET n=n+1",
                           [(k, minute) for k in keys])
            self._writes += 1
            if self._writes % PRUNE_EVERY == 0:
                self._prune(minute)
            return self._read(keys, minute, now)

    def _prune(self, minute: int) -> None:
        self.db.execute("DELETE FROM hit WHERE minute<?", (minute - 1,))
        extra = self.db.execute("SELECT count(*) FROM hit").fetchone()[0] - MAX_ROWS
        if extra > 0:
            self.db.execute("DELETE FROM hit WHERE rowid IN (SELECT rowid FROM hit ORDER BY minute, n LIMIT ?)",
                            (extra,))

    def peek(self, keys: tuple[str, ...], now: float) -> dict[str, float]:
        with self._lock:
            return self._read(keys, int(now // WINDOW), now)

    def rows(self) -> int:
        with self._lock:
            return self.db.execute("SELECT count(*) FROM hit").fetchone()[0]

    def close(self) -> None:
        self.db.close()


class MemoryWindows:
    """The same counts within one process (tests, or when the shared file cannot be opened)."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()

    def hit(self, keys: tuple[str, ...], now: float) -> dict[str, float]:
        minute = int(now // WINDOW)
        with self._lock:
            if len(self.counts) > MAX_ROWS:
                self.counts = {k: n for k, n in self.counts.items() if k[1] >= minute - 1}
            for key in keys:
                self.counts[(key, minute)] = self.counts.get((key, minute), 0) + 1
        return self.peek(keys, now)

    def peek(self, keys: tuple[str, ...], now: float) -> dict[str, float]:
        minute = int(now // WINDOW)
        with self._lock:
            return {k: _rate(self.counts.get((k, minute), 0), self.counts.get((k, minute - 1), 0), now) for k in keys}


def shared_windows(run_dir: Path) -> Windows:
    """The MX's rate counts shared through ``run_dir``; per process (with a warning) when the file fails."""
    try:
        return SqliteWindows(Path(run_dir) / RATES_FILE)
    except (OSError, sqlite3.Error) as exc:
        log.warning("MX rate limits counted per process", path=str(Path(run_dir) / RATES_FILE), error=str(exc))
        return MemoryWindows()


LOOPBACK = ("127.0.0.0/8", "::1/128")


@dataclass(frozen=True)
class RateLimits:
    """Events per minute (0: no limit); ``exempt`` clients are never counted."""

    connections_per_ip: int = 60
    connections_per_network: int = 300
    messages_per_ip: int = 100
    messages_per_network: int = 300
    recipients_per_ip: int = 1000
    exempt: list[Network] = field(default_factory=lambda: parse_networks(LOOPBACK))


# What each kind of event counts, and the reply when a limit is passed (Postfix's wording).
_KINDS = {
    "connection": ("connections_per_ip", "connections_per_network"),
    "message": ("messages_per_ip", "messages_per_network"),
    "recipient": ("recipients_per_ip", ""),
}


class RatePolicy:
    """Counts a client's connections, messages and recipients and says when one is over its limit."""

    def __init__(self, limits: RateLimits, windows: Windows, *, clock: Callable[[], float] = time.time,
                 record: Callable[[str], None] | None = None, hostname: str = "localhost") -> None:
        self.limits = limits
        self.windows = windows
        self.clock = clock
        self.record = record
        self.hostname = hostname
        self._exempt: dict[str, bool] = {}  # asked at connect, MAIL and every RCPT: parsed once per client

    def exempt(self, ip: str) -> bool:
        known = self._exempt.get(ip)
        if known is None:
            if len(self._exempt) >= EXEMPT_KEPT:
                self._exempt.clear()
            known = self._exempt[ip] = in_networks(ip, self.limits.exempt)
        return known

    def _check(self, kind: str, ip: str) -> tuple[str, float, int] | None:
        """Count one ``kind`` event of ``ip``: None, or (scope, rate, limit) of the first limit passed."""
        ip_attr, net_attr = _KINDS[kind]
        ip_limit = getattr(self.limits, ip_attr)
        net_limit = getattr(self.limits, net_attr) if net_attr else 0
        if not ip_limit and not net_limit:
            return None
        net = client_network(ip)
        keys = (f"{kind}:ip:{ip}",) + ((f"{kind}:net:{net}",) if net_limit else ())
        rates = self.windows.hit(keys, self.clock())
        if ip_limit and rates[keys[0]] > ip_limit:
            return ip, rates[keys[0]], ip_limit
        if net_limit and rates[keys[-1]] > net_limit:
            return net, rates[keys[-1]], net_limit
        return None

    def _refuse(self, kind: str, what: str, ip: str, over: tuple[str, float, int], reply: Reply) -> Reply:
        scope, rate, limit = over
        log.warning(f"{what} rate limit exceeded: {rate:.0f}/min from {scope} (client {ip}) for service mx, "
                    f"limit {limit}/min")
        if self.record is not None:
            self.record(f"ratelimit_{kind}")
        return reply

    def connection(self, ip: str) -> Reply | None:
        """At connect: ``421 4.7.0`` (then close) when the client connects too often."""
        if self.exempt(ip) or (over := self._check("connection", ip)) is None:
            return None
        return self._refuse("connection", "Connection", ip, over,
                            Reply(421, "4.7.0", f"{self.hostname} Error: too many connections from {ip}"))

    def message(self, ip: str) -> Reply | None:
        """At MAIL FROM: ``450 4.7.1`` when the client sends too many messages."""
        if self.exempt(ip) or (over := self._check("message", ip)) is None:
            return None
        return self._refuse("message", "Message delivery request", ip, over,
                            Reply(450, "4.7.1", f"Error: too much mail from {ip}"))

    def recipient(self, ip: str) -> Reply | None:
        """At RCPT TO: ``450 4.7.1`` when the client names too many recipients."""
        if self.exempt(ip) or (over := self._check("recipient", ip)) is None:
            return None
        return self._refuse("recipient", "Recipient address", ip, over,
                            Reply(450, "4.7.1", f"Error: too many recipients from {ip}"))

    def state(self, ip: str) -> dict[str, object]:
        """Current rates of ``ip`` and its network against their limits (``dovetail screen show IP``)."""
        net = client_network(ip)
        keys: list[str] = []
        for kind, (_, net_attr) in _KINDS.items():
            keys.append(f"{kind}:ip:{ip}")
            if net_attr:
                keys.append(f"{kind}:net:{net}")
        rates = self.windows.peek(tuple(keys), self.clock())
        out: dict[str, object] = {"ip": ip, "network": net, "exempt": self.exempt(ip)}
        for kind, (ip_attr, net_attr) in _KINDS.items():
            out[f"{kind}s_per_ip"] = {"rate": round(rates[f"{kind}:ip:{ip}"], 2),
                                      "limit": getattr(self.limits, ip_attr)}
            if net_attr:
                out[f"{kind}s_per_network"] = {"rate": round(rates[f"{kind}:net:{net}"], 2),
                                               "limit": getattr(self.limits, net_attr)}
        return out


def rate_limits(cfg: Config) -> RateLimits:
    """The ``mx.rate.*`` keys of ``cfg``."""
    return RateLimits(connections_per_ip=cfg["mx.rate.connections_per_ip"],
                      connections_per_network=cfg["mx.rate.connections_per_network"],
                      messages_per_ip=cfg["mx.rate.messages_per_ip"],
                      messages_per_network=cfg["mx.rate.messages_per_network"],
                      recipients_per_ip=cfg["mx.rate.recipients_per_ip"],
                      exempt=parse_networks(cfg["mx.rate.exempt"]))


def rate_state(cfg: Config, ip: str) -> dict[str, object]:
    """Rates of ``ip`` and its network as the MX workers counted them, with their limits. A file the
    workers have not made yet is not created here (made by root, the service user could not open it)."""
    path = Layout(cfg.data_dir).run / RATES_FILE
    windows = shared_windows(path.parent) if path.exists() else MemoryWindows()
    try:
        return RatePolicy(rate_limits(cfg), windows).state(ip)
    finally:
        if isinstance(windows, SqliteWindows):
            windows.close()
