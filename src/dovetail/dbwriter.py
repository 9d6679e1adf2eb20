"""Write transactions that queue for SQLite's one writer instead of racing for it.

SQLite (WAL) lets one connection write at a time. A transaction that starts reading and then writes
(Python's sqlite3 issues a deferred ``BEGIN``) fails at once with SQLITE_BUSY when another connection
committed since it began, and a writer that finds the lock taken sleeps in SQLite's busy handler
(1, 2, 5 … 25, 50, 100 ms) and polls again. Several processes committing often — smtpd workers storing
replies, the webhook dispatcher recording outcomes — then win or lose the lock by chance: a writer
that sleeps for 25 ms misses every release that happens meanwhile, and the slowest one falls behind
without bound. ``write_transaction`` makes the hot writers queue instead: each takes an exclusive
``flock`` on ``<database>-writer`` (the kernel wakes the next waiter the moment the holder lets go, no
sleeping in between), then ``BEGIN IMMEDIATE`` (the write lock from the first statement, so no
transaction has to be run again because another committed under it). Writers that do not use it
(operator commands, the web admin) still get the lock through the busy handler, as before.

``write_transaction(engine, durable=True)`` is for a record that others rely on as soon as the
transaction returns (the replies hand-over, acknowledged with an SMTP ``250``): on SQLite it commits
with ``synchronous=FULL``, so the write-ahead log is fsynced before the commit returns, where the
database's default (``NORMAL``) survives a crash of the process but not of the machine. Several records
share one such transaction (group commit) and so one fsync.

Blocking: call it from a worker thread in async code. Not re-entrant: a thread must not open a write
transaction inside another. On other databases (PostgreSQL) it is a plain ``engine.begin()``.

``take_role`` is the other use of the same kind of lock: a role only one process of an SQLite database
may hold at a time (the webhook dispatcher), taken without waiting and given up when the process exits,
however it exits.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator

from sqlalchemy.engine import Connection, Engine

_QUEUES: dict[str, _WriterQueue] = {}
_QUEUES_LOCK = threading.Lock()


def _forget_after_fork() -> None:
    """A forked child starts with fresh queues: a thread lock held in the parent at the fork would stay
    held in the child forever, and a shared open file would make flock treat both as one holder."""
    global _QUEUES_LOCK
    _QUEUES.clear()
    _QUEUES_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)


class _WriterQueue:
    """One per database file and process: a thread lock (threads of one process share the open file,
    and ``flock`` does not tell them apart) over a ``flock`` that orders the processes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.threads = threading.Lock()
        self._fd: int | None = None

    def _file(self) -> int | None:
        if self._fd is not None:
            return self._fd
        try:
            # Read-only is enough for flock, so a file created by root stays usable after the drop.
            self._fd = os.open(self.path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError:
            return None  # no queue then: BEGIN IMMEDIATE and the busy handler still keep it correct
        return self._fd

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        with self.threads:
            fd = self._file()
            if fd is None:
                yield
                return
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)


def _queue(engine: Engine) -> _WriterQueue | None:
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:" or database.startswith("file:"):
        return None
    path = os.path.abspath(database) + "-writer"
    with _QUEUES_LOCK:
        queue = _QUEUES.get(path)
        if queue is None:
            queue = _QUEUES[path] = _WriterQueue(path)
        return queue


@contextlib.contextmanager
def write_transaction(engine: Engine, *, durable: bool = False) -> Iterator[Connection]:
    """A transaction like ``engine.begin()``; on SQLite it waits its turn for the write lock first.

    ``durable``: the commit is on stable storage when this returns (on SQLite the log is fsynced; other
    databases commit durably anyway)."""
    queue = _queue(engine)
    if queue is None:
        with engine.begin() as conn:
            yield conn
        return
    if not durable:
        with queue.held(), engine.begin() as conn:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            yield conn
        return
    with queue.held(), engine.connect() as conn:
        # The safety level cannot change inside a transaction: set it before BEGIN, restore it after the
        # commit (the connection goes back to a pool shared with code that expects its own level).
        level = int(conn.exec_driver_sql("PRAGMA synchronous").scalar() or 0)
        conn.exec_driver_sql("PRAGMA synchronous=FULL")
        conn.commit()
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.rollback()
                raise
            conn.commit()
        finally:
            conn.exec_driver_sql(f"PRAGMA synchronous={level}")
            conn.commit()


class Role:
    """A role held through an exclusive ``flock`` on ``<database>-<name>``; the kernel drops it with the
    process, so a killed holder never leaves it taken."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def is_sqlite_file(engine: Engine) -> bool:
    """Whether the database is an SQLite file (where ``write_transaction`` queues and roles apply)."""
    return _queue(engine) is not None


def take_role(engine: Engine, name: str) -> Role | None:
    """Take the role ``name`` of this SQLite database without waiting; ``None`` when another process (or
    another holder in this one) has it. Raises ``OSError`` when the lock file cannot be opened."""
    queue = _queue(engine)
    if queue is None:
        raise ValueError("roles are for SQLite databases: coordinate through the database elsewhere")
    fd = os.open(queue.path.removesuffix("-writer") + "-" + name, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return Role(fd)
