"""Failed logins counted across the worker processes of a service (the IMAP and submission penalties).

Each worker of ``imapd`` or ``submission`` answers its own connections; were the failures counted per
process, a client would get one allowance per worker. The ledger is a small SQLite file in the data
directory's ``run/`` (``auth-failures.sqlite``), shared by the workers: a failure is a row, a count is an
indexed range query, and a success removes the user's and the IP's rows. Its contents are volatile by
nature (``synchronous=OFF``): losing the last failures in a crash costs nothing. A ledger that cannot
be opened falls back to counting in memory, with a warning.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

from dovetail.imap.auth import AuthPenalty, FailureLedger, MemoryLedger
from dovetail.log import get_logger

log = get_logger("auth")
LEDGER_FILE = "auth-failures.sqlite"
MAX_ROWS = 200_000  # beyond this (a flood from many addresses) the oldest failures are forgotten
PRUNE_EVERY = 256

_SCHEMA = """
CREATE TABLE IF NOT EXISTS failure (key TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS failure_key_at ON failure(key, at);
CREATE INDEX IF NOT EXISTS failure_at ON failure(at);
"""


class SqliteLedger:
    """A :class:`~dovetail.imap.auth.FailureLedger` in a file that several processes share."""

    def __init__(self, path: Path, window: float) -> None:
        self.path = Path(path)
        self.window = window
        self._lock = threading.Lock()
        self._adds = 0
        # User names and client addresses: readable by the service user alone (SQLite gives its -wal
        # and -shm files the database file's mode).
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
        db = sqlite3.connect(self.path, timeout=5, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=OFF")
            db.executescript(_SCHEMA)
        except sqlite3.Error:
            db.close()
            raise
        self.db = db

    def count(self, key: str, since: float) -> int:
        with self._lock:
            return self.db.execute("SELECT count(*) FROM failure WHERE key=? AND at>=?", (key, since)).fetchone()[0]

    def add(self, keys: tuple[str, ...], now: float, keep: int) -> None:
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self.db.executemany("INSERT INTO failure VALUES (?, ?)", [(k, now) for k in keys])
                self._adds += 1
                if self._adds % PRUNE_EVERY == 0:
                    self.db.execute("DELETE FROM failure WHERE at<?", (now - self.window,))
                    extra = self.db.execute("SELECT count(*) FROM failure").fetchone()[0] - MAX_ROWS
                    if extra > 0:
                        self.db.execute("DELETE FROM failure WHERE rowid IN "
                                        "(SELECT rowid FROM failure ORDER BY at LIMIT ?)", (extra,))
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    def clear(self, keys: tuple[str, ...]) -> None:
        with self._lock:
            self.db.executemany("DELETE FROM failure WHERE key=?", [(k,) for k in keys])

    def close(self) -> None:
        self.db.close()


def shared_penalty(run_dir: Path, base_delay: float = 0.2, max_delay: float = 15.0, lockout: int = 10,
                   window: float = 300.0) -> AuthPenalty:
    """An auth penalty whose failures every worker using the same ``run_dir`` sees."""
    ledger: FailureLedger
    try:
        ledger = SqliteLedger(Path(run_dir) / LEDGER_FILE, window)
    except (OSError, sqlite3.Error) as exc:
        log.warning("login failures counted per process", path=str(Path(run_dir) / LEDGER_FILE), error=str(exc))
        ledger = MemoryLedger()
    return AuthPenalty(base_delay, max_delay, lockout, window, clock=time.time, ledger=ledger)
