"""Several queue managers on one queue: each owns a shard of the queue ids.

Why shards of one queue rather than one manager handing deliveries to a pool of delivery processes
(Postfix's qmgr → smtp(8)): in Dovetail the delivery agents run in the manager's process, and a good
part of a message's CPU (a quarter to a third in profiles of the relay path) is the manager's own work:
rename, envelope parse, status record, unlink, log lines. A pool behind one manager would leave that
part on one core and add a hand-over in each direction per message; shards put every part of a
message's path on as many cores as there are managers, with nothing passed between processes. What Postfix
keeps global the shards split: each manager runs ``1/count`` of the delivery concurrency.

A queue id belongs to one of ``BUCKETS`` buckets (CRC-32 of the id), and manager ``index`` of
``count`` owns the buckets ``b`` with ``b % count == index``. The buckets, not the shards, are locked:
each manager holds an exclusive byte-range lock (open file description lock, so two managers in one
process exclude each other too) on byte ``b`` of ``pid/qmgr.lock`` for every bucket it owns. Two
managers whose shards overlap cannot both run, even when they were started with different counts
(a reload from 2 to 3 managers while the old ones finish): the newcomer fails to start and is
started again once the old one is gone. Every manager also holds a shared ``flock`` on the same
file, so a tool that takes it exclusively still keeps every manager away, as with one manager.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

BUCKETS = 64  # the most managers one queue can have

_F_WRLCK = getattr(fcntl, "F_WRLCK", 1)
_OFD_SETLK = getattr(fcntl, "F_OFD_SETLK", None)  # Linux; elsewhere process-wide POSIX locks


class ShardBusy(RuntimeError):
    """Another queue manager holds (part of) this shard."""


@dataclass(frozen=True)
class Shard:
    """Manager ``index`` of ``count`` on one queue; ``Shard()`` is the whole queue."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.count <= BUCKETS or not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index} of {self.count}: need 0 <= index < count <= {BUCKETS}")

    @property
    def whole(self) -> bool:
        return self.count == 1

    def owns(self, qid: str) -> bool:
        return self.count == 1 or bucket(qid) % self.count == self.index

    def buckets(self) -> list[int]:
        return [b for b in range(BUCKETS) if b % self.count == self.index]

    def trigger_name(self) -> str:
        """The wake-up FIFO's name in ``public/``: ``qmgr`` for the first (so a lone manager is woken
        where it always was), ``qmgr.<index>`` for the others."""
        return "qmgr" if self.index == 0 else f"qmgr.{self.index}"


def bucket(qid: str) -> int:
    return zlib.crc32(qid.encode()) % BUCKETS


class ShardLock:
    """The locks that make ``shard`` this process's to deliver; ``release`` (or exit) gives them back."""

    def __init__(self, path: Path, shard: Shard) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ShardBusy("the queue lock is held exclusively") from None
            for b in shard.buckets():
                if not _lock_byte(self.fd, b):
                    raise ShardBusy(f"bucket {b} is another queue manager's")
        except BaseException:
            os.close(self.fd)
            raise

    def release(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1


def _lock_byte(fd: int, offset: int) -> bool:
    if _OFD_SETLK is None:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
        except OSError:
            return False
        return True
    # struct flock: l_type, l_whence, l_start, l_len, l_pid (0 for OFD locks), native alignment.
    request = struct.pack("hhqqi4x", _F_WRLCK, os.SEEK_SET, offset, 1, 0)
    try:
        fcntl.fcntl(fd, _OFD_SETLK, request)
    except OSError:
        return False
    return True
