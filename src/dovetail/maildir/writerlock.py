"""The index's writer lock: an ``flock`` on a file beside the index that Dovetail's writers hold around
each write transaction, so a writer that finds the index busy learns of its release in microseconds.

SQLite's own wait for a busy database is a sleep between tries of 1, 2, 5, 10, 15 ... ms: a write lock
another imapd worker holds for 0.3 ms (a STORE's renames and rows) cost the waiting session at least
1 ms and often 3, and a session that waits holds up the others of its process that need the folder.
Writers here first take this lock, which is cheap when free (one system call), and poll it at a fine
step (from 50 µs) while it is held; only then do they ``BEGIN IMMEDIATE``, which then finds the SQLite
lock free. A session that only needs to know a writer has finished (see ``Folder._writer_done``) takes
the lock shared and lets go at once, without a transaction and without queueing behind other waiters.

The wait polls rather than blocks in the kernel so that it keeps a deadline: a thread blocked in
``flock`` could not be woken, and the lock is taken where other locks (a folder's per-process state)
may be held. At the deadline the writer goes on without it and SQLite's busy handler waits as before;
this lock only makes waits shorter, SQLite's remains the one that keeps writers apart, so a writer that
lacks the file (it could not be created: a read-only folder, a full disk) or an older Dovetail without
it is still kept apart from the others.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

LOCK_SUFFIX = ".lock"  # "dovetail-index.sqlite.lock": a name transfers and backups already skip
WAIT_SECONDS = 30.0  # as long as SQLite's busy timeout on the index connection
# Poll steps: fine while a lock held for a few hundred microseconds (the common case) is likely to go,
# then coarser; the last step repeats.
_STEPS = (0.00005, 0.00005, 0.0001, 0.0001, 0.0002, 0.0002, 0.0004, 0.0008, 0.001)


class WriterLock:
    """The lock file of one index, opened once per connection (``flock`` locks belong to an open file,
    so two connections of one process keep each other out as two processes do)."""

    def __init__(self, index_path: Path) -> None:
        self.index_path = index_path
        self._fd: int | None = None
        self._unusable = False
        self.held = False
        self.timed_out = False  # the last acquire gave up at its deadline (another holder kept the lock)

    def _open(self) -> int | None:
        if self._fd is None and not self._unusable:
            try:
                # Read-only is enough for flock, and works on a lock file another user created.
                self._fd = os.open(f"{self.index_path}{LOCK_SUFFIX}", os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError:
                self._unusable = True  # SQLite's own lock still keeps writers apart
        return self._fd

    def acquire(self, shared: bool = False, timeout: float = WAIT_SECONDS) -> bool:
        """Take the lock (exclusive for a writer, shared to wait for writers); False when there is no
        lock file or the deadline passed."""
        self.timed_out = False
        fd = self._open()
        if fd is None:
            return False
        mode = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB
        try:
            fcntl.flock(fd, mode)
        except BlockingIOError:
            if not self._poll(fd, mode, timeout):
                self.timed_out = True
                return False
        except OSError:
            return False
        self.held = True
        return True

    @staticmethod
    def _poll(fd: int, mode: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        step = 0
        while True:
            time.sleep(_STEPS[step])
            if step < len(_STEPS) - 1:
                step += 1
            try:
                fcntl.flock(fd, mode)
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return False
            except OSError:
                return False

    def release(self) -> None:
        if self.held:
            self.held = False
            if self._fd is not None:
                try:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)
                except OSError:
                    pass

    def close(self) -> None:
        self.held = False
        if self._fd is not None:
            try:
                os.close(self._fd)  # closing the file lets go of the lock too
            finally:
                self._fd = None
