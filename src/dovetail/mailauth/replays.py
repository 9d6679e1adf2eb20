"""The proxy tokens a home node accepted, so that none is accepted twice (:mod:`dovetail.mailauth.proxytoken`).

A token is good for a minute; without this record one copied off the wire between two nodes could log
in again within that minute. Every ``imapd`` worker of the node must see the same record, as they see
the same login-failure ledger (:mod:`dovetail.mailauth.failures`): a small SQLite file in ``run/``
(``proxy-tokens.sqlite``, a :mod:`dovetail.rundb` one) with one row per accepted token, kept until the
token expires. Per node is enough: only the account's home node serves a proxied login (any other node
proxies it on, under a token of its own). A file that cannot be opened falls back to a record in memory,
with a warning.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from dovetail.log import get_logger
from dovetail.mailauth.proxytoken import Replays
from dovetail.rundb import open_run_db, writing

log = get_logger("auth")
REPLAYS_FILE = "proxy-tokens.sqlite"
PRUNE_EVERY = 256  # accepted tokens between two sweeps of the expired ones

_SCHEMA = """
CREATE TABLE IF NOT EXISTS used (key TEXT PRIMARY KEY, until REAL NOT NULL) WITHOUT ROWID;
"""


class MemoryReplays:
    """A :class:`~dovetail.mailauth.proxytoken.Replays` for one process (tests, a node whose ``run/`` is unusable)."""

    def __init__(self) -> None:
        self._used: dict[str, float] = {}
        self._lock = threading.Lock()
        self._sweep_at = PRUNE_EVERY

    def first_use(self, key: str, until: float) -> bool:
        now = time.time()
        with self._lock:
            if len(self._used) >= self._sweep_at:
                # Sweep when the dict has doubled since the last sweep: O(1) per login on average,
                # however many tokens are live.
                self._used = {k: u for k, u in self._used.items() if u >= now}
                self._sweep_at = max(PRUNE_EVERY, 2 * len(self._used))
            if self._used.get(key, 0.0) >= now:
                return False
            self._used[key] = until
            return True


class SqliteReplays:
    """The record in a file that the node's worker processes share."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._uses = 0
        self.db = open_run_db(self.path, _SCHEMA)

    def first_use(self, key: str, until: float) -> bool:
        now = time.time()
        with self._lock, writing(self.db) as db:
            self._uses += 1
            if self._uses % PRUNE_EVERY == 0:
                db.execute("DELETE FROM used WHERE until<?", (now,))
            # A row outlives its token's freshness (``until``) only until the next sweep: the key is never new again.
            return db.execute("INSERT OR IGNORE INTO used VALUES (?, ?)", (key, until)).rowcount == 1

    def close(self) -> None:
        self.db.close()


def shared_replays(run_dir: Path) -> Replays:
    """The record every worker using the same ``run_dir`` sees."""
    try:
        return SqliteReplays(Path(run_dir) / REPLAYS_FILE)
    except (OSError, sqlite3.Error) as exc:
        log.warning("accepted proxy tokens remembered per process", path=str(Path(run_dir) / REPLAYS_FILE),
                    error=str(exc))
        return MemoryReplays()
