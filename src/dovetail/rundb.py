"""Small SQLite files in the data directory's ``run/`` that the workers of a service share (login
failures, connection slots): volatile by nature (``synchronous=OFF``: losing the last writes in a
crash costs nothing), WAL so readers do not wait for writers, and readable by the service user alone
(they hold user names and client addresses; SQLite gives the ``-wal`` and ``-shm`` files the mode of
the database file)."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BUSY_TIMEOUT = 5.0


def open_run_db(path: Path, schema: str) -> sqlite3.Connection:
    """Open (creating with mode 0600) the shared file at ``path`` and make sure ``schema`` is in it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    db = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=OFF")
        db.executescript(schema)
    except sqlite3.Error:
        db.close()
        raise
    return db


@contextmanager
def writing(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction (``BEGIN IMMEDIATE``): committed, or rolled back on any error."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise

