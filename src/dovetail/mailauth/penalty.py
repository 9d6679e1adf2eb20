"""How failed logins are slowed down, for IMAP and submission alike.

``AuthPenalty`` follows Dovecot's auth penalty: each recent failure of a user or of an IP doubles the
delay before the next failure is answered, and past a threshold the login is refused outright (IMAP's
``NO [UNAVAILABLE]``) until the failures age out. The failures live in a ledger: in memory for one
process, or in a file every worker of a service shares (:mod:`dovetail.mailauth.failures`), so that a
client does not get one allowance per worker process.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol


class FailureLedger(Protocol):
    """Where failed logins are counted: ``key`` is ``u:<user>`` or ``ip:<address>``, times are the
    penalty's clock."""

    def count(self, key: str, since: float) -> int: ...

    def add(self, keys: tuple[str, ...], now: float, keep: int) -> None: ...

    def clear(self, keys: tuple[str, ...]) -> None: ...


class MemoryLedger:
    """Failures of one process (callers may use it from worker threads)."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self.max_keys = max_keys
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def count(self, key: str, since: float) -> int:
        with self._lock:
            q = self._failures.get(key)
            if not q:
                return 0
            while q and q[0] < since:
                q.popleft()
            if not q:
                del self._failures[key]
                return 0
            return len(q)

    def add(self, keys: tuple[str, ...], now: float, keep: int) -> None:
        with self._lock:
            if len(self._failures) >= self.max_keys:
                self._failures.clear()
            for key in keys:
                self._failures.setdefault(key, deque(maxlen=keep)).append(now)

    def clear(self, keys: tuple[str, ...]) -> None:
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)


class AuthPenalty:
    """Failure bookkeeping per user and per IP, shared by all sessions of one server process, or by
    every process whose penalties share one ledger file (then give a wall ``clock``)."""

    def __init__(self, base_delay: float = 0.2, max_delay: float = 15.0, lockout: int = 10,
                 window: float = 300.0, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 100_000, ledger: FailureLedger | None = None) -> None:
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.lockout = lockout
        self.window = window
        self.clock = clock
        self.ledger: FailureLedger = ledger if ledger is not None else MemoryLedger(max_keys)

    @staticmethod
    def _keys(username: str, ip: str) -> tuple[str, str]:
        return "u:" + username.lower(), "ip:" + ip

    def failures(self, username: str, ip: str) -> int:
        since = self.clock() - self.window
        return max(self.ledger.count(key, since) for key in self._keys(username, ip))

    def blocked(self, username: str, ip: str) -> bool:
        """True when this user or IP has failed so often that logins are refused for now."""
        return self.failures(username, ip) >= self.lockout

    def record_failure(self, username: str, ip: str) -> float:
        """Count a failure; return how long to wait before answering it."""
        self.ledger.add(self._keys(username, ip), self.clock(), self.lockout * 4)
        n = self.failures(username, ip)
        return min(self.max_delay, self.base_delay * 2 ** (n - 1))

    def record_success(self, username: str, ip: str) -> None:
        if self.failures(username, ip):
            self.ledger.clear(self._keys(username, ip))
