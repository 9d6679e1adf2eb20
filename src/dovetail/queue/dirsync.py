"""Group commit of one directory's fsync, shared by the threads that changed it.

A thread that has just renamed or linked a file into the directory calls ``sync()``; it returns
once an fsync of the directory that *began after* that call has finished. Concurrent callers share
fsyncs: while one fsync runs, later callers wait for it to end, then one of them (the leader) starts
a single fsync that covers everyone who arrived meanwhile. No extra thread is involved: the leader
is whichever caller finds no fsync running, so the cost of a hand-off to a committer thread is
avoided and a lone caller pays exactly one fsync, as without batching.

Correctness rests on one rule: a request number is taken, under the lock, only after the caller's
directory change is done, and an fsync started with ``requested == n`` covers every request up to
``n``. An error from fsync fails every caller it would have covered.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

_KEEP_FAILED = 64  # failed batches remembered for their waiters (failures are rare; waiters wake at once)


class GroupFsync:
    """fsync of one directory, shared by concurrent callers (see the module docstring)."""

    def __init__(self, path: Path | str, group: bool = True) -> None:
        self.path = Path(path)
        self.group = group
        self._fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.inode = os.fstat(self._fd).st_ino
        self._cv = threading.Condition(threading.Lock())
        self._requested = 0
        self._covered = 0
        self._running = False
        self._failed: list[tuple[int, int, Exception]] = []  # (after, up to, error) of failed fsyncs
        self.fsyncs = 0

    def sync(self) -> None:
        """Return once the directory's current contents are on stable storage."""
        if not self.group:
            os.fsync(self._fd)
            with self._cv:
                self.fsyncs += 1
            return
        with self._cv:
            self._requested += 1
            mine = self._requested
            while self._running and self._covered < mine:
                self._cv.wait()
            if self._covered >= mine:
                earlier = self._failed_for(mine)
                if earlier is not None:
                    raise earlier
                return
            self._running = True
            target = self._requested
            start = self._covered
        error: Exception | None = None
        try:
            os.fsync(self._fd)
        except Exception as exc:  # noqa: BLE001 - every caller of the batch must see it, and the batch must end
            error = exc
        with self._cv:
            self._running = False
            self.fsyncs += 1
            if error is not None:
                self._failed = [*self._failed[-(_KEEP_FAILED - 1):], (start, target, error)]
            self._covered = target
            self._cv.notify_all()
        if error is not None:
            raise error

    def _failed_for(self, mine: int) -> Exception | None:
        for start, target, error in self._failed:
            if start < mine <= target:
                return error
        return None

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        self.close()
