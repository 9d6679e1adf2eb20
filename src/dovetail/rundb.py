"""Small SQLite files in the data directory's ``run/`` that the workers of a service share (login
failures, connection slots): volatile by nature (``synchronous=OFF``: losing the last writes in a
crash costs nothing), WAL so readers do not wait for writers, and readable by the service user alone
(they hold user names and client addresses; SQLite gives the ``-wal`` and ``-shm`` files the mode of
the database file).

Writers take an ``flock`` on a ``.lock`` file beside the database before ``BEGIN IMMEDIATE``. SQLite's own
wait for its write lock is a busy handler that sleeps 1, 2, 5, 10 ms between tries, while a write here
holds the lock some 50 us: the workers of imapd, taking and giving back connection slots at every
login and logout, idled their storage thread in those sleeps. The kernel wakes a process waiting in
``flock`` as soon as the holder lets go, and a holder that dies lets go with its descriptor. Every
write to these files goes through :func:`writing` or :func:`write_lock`, so SQLite's lock is then always
free when asked.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BUSY_TIMEOUT = 5.0


class RunDb(sqlite3.Connection):
    """A connection to a shared run file, with the descriptor of its writers' lock file."""

    lock_fd = -1

    def close(self) -> None:
        if self.lock_fd >= 0:
            os.close(self.lock_fd)
            self.lock_fd = -1
        super().close()


def open_run_db(path: Path, schema: str) -> sqlite3.Connection:
    """Open (creating with mode 0600) the shared file at ``path`` and make sure ``schema`` is in it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    db = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False, factory=RunDb)
    try:
        db.lock_fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=OFF")
        db.executescript(schema)
    except (OSError, sqlite3.Error):
        db.close()
        raise
    return db


@contextmanager
def write_lock(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """The writers' lock alone: one write statement under it is its own transaction, made in one call
    into SQLite (each call hands the GIL over and back, while the other workers wait for the lock).
    Callers serialise their threads first (the lock is the process's, not the thread's)."""
    fd = getattr(db, "lock_fd", -1)
    if fd >= 0:
        fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield db
    finally:
        if fd >= 0:
            fcntl.flock(fd, fcntl.LOCK_UN)


@contextmanager
def writing(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction (``BEGIN IMMEDIATE``) under the writers' lock: committed, or rolled back on
    any error."""
    with write_lock(db):
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
