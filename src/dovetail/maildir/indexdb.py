"""The index's database connection, which goes on in memory when the index file cannot be written.

Dovecot keeps serving a mailbox whose index it cannot write (a full disk, a quota, an I/O error): it
logs a warning and carries on with the index in memory. This does the same for our SQLite index. The
connection is a thin stand-in for :class:`sqlite3.Connection` (the few methods the index uses); while
a write transaction is open it notes its statements. When a statement fails because the file cannot
be written, the transaction is rolled back in the file, the file's last committed state is copied
into a private in-memory database, the statements noted so far are run again there and the failed
one after them: the caller never sees the failure, and nothing it decided from what it read changes
(the copy is the state its transaction started from).

From then on this connection, and the :class:`~dovetail.maildir.folder.Folder` that owns it, live in
memory: the Maildir and ``dovecot-uidlist`` stay the truth and every sync still brings the copy up to
date from them. The file is tried again by the next opening of the folder; a sync then writes into it
what the Maildir says. A wrapper rather than a ``sqlite3.Connection`` subclass because the switch
replaces the connection under callers that hold a reference to it.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dovetail.log import get_logger
from dovetail.maildir.diskfull import index_unwritable
from dovetail.maildir.writerlock import WAIT_SECONDS, WriterLock

log = get_logger("maildir")

_WARNED: set[str] = set()
_WARNED_LOCK = threading.Lock()


def warn_once(path: Path, exc: BaseException) -> None:
    """Log that the index at ``path`` went into memory, once per file and process."""
    key = str(path)
    with _WARNED_LOCK:
        if key in _WARNED:
            return
        _WARNED.add(key)
    log.warning("index cannot be written, keeping it in memory", index=key, error=str(exc))


def forget_warnings() -> None:
    """Warn again next time (the index could be written again)."""
    with _WARNED_LOCK:
        _WARNED.clear()


def memory_copy(source: sqlite3.Connection | None, path: Path) -> sqlite3.Connection:
    """A private in-memory database holding the last committed state of the index: read through
    ``source`` when it can still read, else from the file alone (``immutable``: no lock or shared-memory
    file is needed, which a full disk may refuse); empty when neither can be read."""
    mem = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    for attempt in (source, None):
        try:
            if attempt is None:
                reader = sqlite3.connect(f"{path.resolve().as_uri()}?immutable=1", uri=True)
                try:
                    reader.backup(mem)
                finally:
                    reader.close()
            else:
                attempt.backup(mem)
            return mem
        except sqlite3.Error:
            continue
    return mem


class IndexDB:
    """The index's connection (see the module docstring): the file's, or its copy in memory."""

    def __init__(self, conn: sqlite3.Connection, path: Path, *, in_memory: bool = False) -> None:
        self.conn = conn
        self.path = path
        self.in_memory = in_memory
        self.on_memory: Callable[[], None] | None = None
        self._log: list[tuple[str, Any, bool]] | None = None
        self._writer = WriterLock(path)
        self._held_around = False  # the writer lock is held around the transactions (holding_writer)

    # --- what the index uses of sqlite3.Connection ---------------------------------------------

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        if self._log is not None:
            self._log.append((sql, params, False))
        try:
            return self.conn.execute(sql, params)
        except sqlite3.OperationalError as exc:
            if self.in_memory or not index_unwritable(exc):
                raise
            self._to_memory(exc)
            return self.conn.execute(sql, params)

    def executemany(self, sql: str, params: Iterable[Any]) -> sqlite3.Cursor:
        if iter(params) is params:  # a one-time iterator: kept to be run again in memory, should
            params = list(params)  # the file refuse it (an iterable that iterates anew is kept as it is)
        if self._log is not None:
            self._log.append((sql, params, True))
        try:
            return self.conn.executemany(sql, params)
        except sqlite3.OperationalError as exc:
            if self.in_memory or not index_unwritable(exc):
                raise
            self._to_memory(exc)
            return self.conn.executemany(sql, params)

    @property
    def in_transaction(self) -> bool:
        return self.conn.in_transaction

    def close(self) -> None:
        self._writer.close()
        self.conn.close()

    # --- write transactions ------------------------------------------------------------------------

    def begin_write(self) -> None:
        """``BEGIN IMMEDIATE`` under the writer lock (see :mod:`~dovetail.maildir.writerlock`), noting
        the transaction's statements from here."""
        if not self.in_memory and not self._held_around:
            self._writer.acquire()
        self._log = []
        try:
            self.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._log = None
            self._release_writer()
            raise

    def end_write(self, sql: str) -> None:
        """``COMMIT`` or ``ROLLBACK`` the write transaction."""
        try:
            self.execute(sql)
        finally:
            self._log = None
            self._release_writer()

    def abandon_write(self) -> None:
        """``ROLLBACK`` the write transaction, if SQLite has not already ended it."""
        try:
            if self.conn.in_transaction:
                self.execute("ROLLBACK")
        finally:
            self._log = None
            self._release_writer()

    def _release_writer(self) -> None:
        if not self._held_around:
            self._writer.release()

    @contextmanager
    def holding_writer(self) -> Iterator[None]:
        """Hold the writer lock around a change of the folder's files and the write transactions that
        record it (an APPEND's rename into ``cur/``, its numbering, its row), as a flag change or an
        expunge does inside its one transaction: a session that finds the files and the index
        disagreeing waits for the lock (:meth:`wait_for_writers`) and then finds them agreeing, instead
        of listing the folder. Without the lock (in memory, no lock file, its deadline passed) the
        transactions inside take it, or SQLite's lock, each for itself."""
        if self.in_memory or self._held_around or not self._writer.acquire():
            yield
            return
        self._held_around = True
        try:
            yield
        finally:
            self._held_around = False
            self._writer.release()

    def wait_for_writers(self, timeout: float = WAIT_SECONDS) -> bool:
        """Wait until no Dovetail writer holds the index's write lock; False when the wait failed.
        The writer lock taken shared does it without a transaction and without queueing behind other
        waiters; without a lock file, a ``BEGIN IMMEDIATE`` rolled back at once. A writer that keeps
        the lock past ``timeout`` fails the wait then (not once more in SQLite's busy handler)."""
        if not self.in_memory:
            if self._writer.acquire(shared=True, timeout=timeout):
                self._writer.release()
                return True
            if self._writer.timed_out:
                return False
        try:
            self.begin_write()
        except sqlite3.OperationalError:
            return False
        self.abandon_write()
        return True

    def _to_memory(self, exc: BaseException) -> None:
        """Go on in memory: the file's committed state, with this transaction's statements so far."""
        noted = self._log or []
        file_conn = self.conn
        reading = file_conn.in_transaction and self._log is None  # inside a read snapshot
        if file_conn.in_transaction:
            try:
                file_conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
        mem = memory_copy(file_conn, self.path)
        try:
            file_conn.close()
        except sqlite3.Error:
            pass
        self.conn = mem
        self.in_memory = True
        warn_once(self.path, exc)
        if reading:
            mem.execute("BEGIN")
        # The statement that failed is the last one noted: the caller runs it again.
        for sql, params, many in noted[:-1]:
            if sql.lstrip()[:6].upper() == "SELECT":
                continue
            if many:
                mem.executemany(sql, params)
            else:
                mem.execute(sql, params)
        if self.on_memory is not None:
            self.on_memory()
