"""Connection slots per client IP and per user, counted across the worker processes of a service.

A service with several workers (imapd runs one per CPU) would otherwise enforce its per-IP and per-user
connection limits in each worker, so a client could hold the limit times the number of workers; Dovecot
counts them in one place (anvil). Here the count is a small SQLite file in the data directory's
``run/`` shared by the workers: a slot is a row ``(key, pid, n)``, taking one checks the sum for the
key and adds to the worker's own row in one write statement, giving back subtracts (a connection's
IP and user slots in one statement; a row at 0 is deleted by a trigger). Rows of
workers that died (a crash does not give its slots back) are removed when a worker starts, and
whenever a key is full, by checking which pids are still alive (the file is a :mod:`dovetail.rundb`
one). :class:`MemorySlots` counts within one process (tests, one-process servers).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path
from typing import Protocol

from dovetail.rundb import open_run_db, write_lock, writing

SLOTS_FILE = "connections-{service}.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS slot (key TEXT NOT NULL, pid INTEGER NOT NULL, n INTEGER NOT NULL,
                                 PRIMARY KEY (key, pid));
CREATE TRIGGER IF NOT EXISTS slot_freed AFTER UPDATE OF n ON slot WHEN NEW.n <= 0
BEGIN DELETE FROM slot WHERE key = NEW.key AND pid = NEW.pid; END;
"""
# Taking a slot is one statement, so one call into SQLite under the writers' lock: it adds to the worker's
# row only while the key's sum is below the limit (rowcount 0: full).
_TAKE = ("INSERT INTO slot SELECT ?1, ?2, 1 WHERE (SELECT coalesce(sum(n), 0) FROM slot WHERE key = ?1) < ?3 "
         "ON CONFLICT (key, pid) DO UPDATE SET n = n + 1")


class Slots(Protocol):
    def acquire(self, key: str, limit: int) -> bool: ...

    def release(self, *keys: str) -> None: ...


class MemorySlots:
    """Slots of one process (callers may use it from worker threads)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str, limit: int) -> bool:
        with self._lock:
            n = self.counts.get(key, 0)
            if n >= limit:
                return False
            self.counts[key] = n + 1
            return True

    def release(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                n = self.counts.get(key, 0) - 1
                if n <= 0:
                    self.counts.pop(key, None)
                else:
                    self.counts[key] = n


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SharedSlots:
    """Slots in a file the workers of one service share (see the module docstring)."""

    def __init__(self, path: Path, pid: int | None = None) -> None:
        self.path = Path(path)
        self.pid = pid if pid is not None else os.getpid()
        self._lock = threading.Lock()
        self.db = open_run_db(self.path, _SCHEMA)
        # A worker starts with no slots; what dead workers held is free again.
        with self._lock, writing(self.db) as db:
            db.execute("DELETE FROM slot WHERE pid=?", (self.pid,))
            self._forget_dead()

    def _forget_dead(self) -> int:
        pids = [pid for (pid,) in self.db.execute("SELECT DISTINCT pid FROM slot")]
        dead = [pid for pid in pids if pid != self.pid and not _alive(pid)]
        for pid in dead:
            self.db.execute("DELETE FROM slot WHERE pid=?", (pid,))
        return len(dead)

    def acquire(self, key: str, limit: int) -> bool:
        with self._lock:
            with write_lock(self.db) as db:
                if db.execute(_TAKE, (key, self.pid, limit)).rowcount == 1:
                    return True
            with writing(self.db) as db:  # full: unless some of its slots are dead workers'
                return bool(self._forget_dead()) and db.execute(_TAKE, (key, self.pid, limit)).rowcount == 1

    def release(self, *keys: str) -> None:
        """Give back one slot of each key, in one statement (a row that reaches 0 is deleted by its trigger)."""
        if len(set(keys)) < len(keys):  # a key twice: the statement would give it back once
            for key in keys:
                self.release(key)
            return
        if not keys:
            return
        marks = ", ".join("?" * len(keys))
        with self._lock, write_lock(self.db) as db:
            db.execute(f"UPDATE slot SET n = n - 1 WHERE pid = ? AND key IN ({marks})", (self.pid, *keys))

    def close(self) -> None:
        self.db.close()


def shared_slots(run_dir: Path, service: str) -> Slots:
    """The slots of ``service`` shared through ``run_dir``; per process when the file cannot be used."""
    try:
        return SharedSlots(Path(run_dir) / SLOTS_FILE.format(service=service))
    except (OSError, sqlite3.Error) as exc:
        from dovetail.log import get_logger

        get_logger(service).warning("connection limits counted per process", error=str(exc))
        return MemorySlots()
