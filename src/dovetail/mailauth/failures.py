"""Failed logins counted across the worker processes of a service (the IMAP and submission penalties).

Each worker of ``imapd`` or ``submission`` answers its own connections; were the failures counted per
process, a client would get one allowance per worker. The ledger is a small SQLite file in the data
directory's ``run/`` (``auth-failures.sqlite``), shared by the workers: a failure is a row, a count is an
indexed range query, and a success removes the user's and the IP's rows (the file is a
:mod:`dovetail.rundb` one). A ledger that cannot be opened falls back to counting in memory, with a
warning.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from sqlalchemy.engine import Engine

from dovetail.log import get_logger
from dovetail.mailauth.cluster import DbLedger, shares_counters
from dovetail.mailauth.penalty import AuthPenalty, FailureLedger, MemoryLedger
from dovetail.rundb import open_run_db, writing

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
    """A :class:`~dovetail.mailauth.penalty.FailureLedger` in a file that several processes share."""

    def __init__(self, path: Path, window: float) -> None:
        self.path = Path(path)
        self.window = window
        self._lock = threading.Lock()
        self._adds = 0
        self.db = open_run_db(self.path, _SCHEMA)

    def count(self, key: str, since: float) -> int:
        with self._lock:
            return self.db.execute("SELECT count(*) FROM failure WHERE key=? AND at>=?", (key, since)).fetchone()[0]

    def add(self, keys: tuple[str, ...], now: float, keep: int) -> None:
        with self._lock, writing(self.db) as db:
            db.executemany("INSERT INTO failure VALUES (?, ?)", [(k, now) for k in keys])
            self._adds += 1
            if self._adds % PRUNE_EVERY == 0:
                db.execute("DELETE FROM failure WHERE at<?", (now - self.window,))
                extra = db.execute("SELECT count(*) FROM failure").fetchone()[0] - MAX_ROWS
                if extra > 0:
                    db.execute("DELETE FROM failure WHERE rowid IN (SELECT rowid FROM failure ORDER BY at LIMIT ?)",
                               (extra,))

    def clear(self, keys: tuple[str, ...]) -> None:
        with self._lock, writing(self.db) as db:
            db.executemany("DELETE FROM failure WHERE key=?", [(k,) for k in keys])

    def close(self) -> None:
        self.db.close()


def shared_penalty(run_dir: Path, base_delay: float = 0.2, max_delay: float = 15.0, lockout: int = 10,
                   window: float = 300.0, engine: Engine | None = None) -> AuthPenalty:
    """An auth penalty whose failures every worker using the same ``run_dir`` sees; with a cluster's
    PostgreSQL ``engine``, every worker of every node."""
    ledger: FailureLedger
    if shares_counters(engine):
        assert engine is not None
        return AuthPenalty(base_delay, max_delay, lockout, window, clock=time.time, ledger=DbLedger(engine, window))
    try:
        ledger = SqliteLedger(Path(run_dir) / LEDGER_FILE, window)
    except (OSError, sqlite3.Error) as exc:
        log.warning("login failures counted per process", path=str(Path(run_dir) / LEDGER_FILE), error=str(exc))
        ledger = MemoryLedger()
    return AuthPenalty(base_delay, max_delay, lockout, window, clock=time.time, ledger=ledger)
