"""What the screening stage remembers per client address, shared by the MX workers (postscreen's
cache): the last verdict, until when a client that passed skips the tests (``mx.screen.cache_ttl``)
and until when its DNSBL score stands (``mx.screen.dnsbl_ttl``). A small SQLite file in ``run/``
(a :mod:`dovetail.rundb` one, as the login ledger); losing it costs each client one more greet wait.
Bounded: expired rows go, and beyond ``max_rows`` the least recently seen ones."""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ...rundb import open_run_db, writing

CACHE_FILE = "screen.sqlite"
PRUNE_EVERY = 200  # writes between two prunes

_SCHEMA = """
CREATE TABLE IF NOT EXISTS client (
    ip TEXT PRIMARY KEY, verdict TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '', score INTEGER,
    seen REAL NOT NULL, pass_until REAL NOT NULL DEFAULT 0, dnsbl_until REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS client_seen ON client (seen);
"""


@dataclass(frozen=True)
class Entry:
    ip: str
    verdict: str  # PASS, PREGREET, DNSBL, DENYLISTED, HANGUP
    detail: str
    score: int | None  # None: no DNSBL answer stored
    seen: float
    pass_until: float
    dnsbl_until: float

    def passed(self, now: float) -> bool:
        return self.pass_until > now

    def dnsbl_fresh(self, now: float) -> bool:
        return self.score is not None and self.dnsbl_until > now


class ScreenCache:
    def __init__(self, path: Path, max_rows: int = 100_000) -> None:
        self.path = Path(path)
        self.max_rows = max_rows
        self._lock = threading.Lock()
        self._writes = 0
        self.db = open_run_db(self.path, _SCHEMA)

    def get(self, ip: str) -> Entry | None:
        with self._lock:
            row = self.db.execute("SELECT ip, verdict, detail, score, seen, pass_until, dnsbl_until FROM client "
                                  "WHERE ip=?", (ip,)).fetchone()
        return Entry(*row) if row else None

    def record(self, ip: str, verdict: str, detail: str = "", *, score: int | None = None,
               pass_until: float | None = None, dnsbl_until: float | None = None, now: float | None = None) -> None:
        """Store the verdict; ``None`` keeps what the row had (a DNSBL score stays while fresh)."""
        now = time.time() if now is None else now
        with self._lock, writing(self.db) as db:
            db.execute(
                "INSERT INTO client (ip, verdict, detail, score, seen, pass_until, dnsbl_until) "
                "VALUES (?, ?, ?, ?, ?, coalesce(?, 0), coalesce(?, 0)) ON CONFLICT (ip) DO UPDATE SET "
                "verdict=excluded.verdict, detail=excluded.detail, seen=excluded.seen, "
                "score=coalesce(?, score), pass_until=coalesce(?, pass_until), dnsbl_until=coalesce(?, dnsbl_until)",
                (ip, verdict, detail, score, now, pass_until, dnsbl_until, score, pass_until, dnsbl_until))
            self._writes += 1
            if self._writes % PRUNE_EVERY == 0:
                self._prune(db, now)

    def prune(self, now: float | None = None) -> int:
        with self._lock, writing(self.db) as db:
            return self._prune(db, time.time() if now is None else now)

    def _prune(self, db: sqlite3.Connection, now: float) -> int:
        # A verdict that is not a pass is kept a day for `dovetail screen show`, then goes.
        gone = db.execute("DELETE FROM client WHERE pass_until < ? AND dnsbl_until < ? AND seen < ?",
                          (now, now, now - 86400)).rowcount
        extra = db.execute("SELECT count(*) FROM client").fetchone()[0] - self.max_rows
        if extra > 0:
            gone += db.execute("DELETE FROM client WHERE ip IN (SELECT ip FROM client ORDER BY seen LIMIT ?)",
                               (extra,)).rowcount
        return gone

    def flush(self, ip: str | None = None) -> int:
        """Forget one client, or everyone; returns how many rows went."""
        with self._lock, writing(self.db) as db:
            if ip is None:
                return db.execute("DELETE FROM client").rowcount
            return db.execute("DELETE FROM client WHERE ip=?", (ip,)).rowcount

    def count(self) -> int:
        with self._lock:
            return self.db.execute("SELECT count(*) FROM client").fetchone()[0]

    def close(self) -> None:
        self.db.close()


def cache_path(run_dir: Path) -> Path:
    return Path(run_dir) / CACHE_FILE
