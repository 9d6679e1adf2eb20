"""Queue ids: short, unique across processes on one host, and sortable by arrival time.

A queue id is 16 characters of Crockford base-32 (digits and uppercase letters, in ASCII order so
that string order is time order): 11 characters of microseconds since the epoch, then 5 characters
of the process id. Within one process the microsecond stamp is forced to increase, so two ids from
one process never collide; two processes differ in the pid part. This is the idea of Postfix's long
queue ids (time + inode number) with the pid standing in for the inode, because the id must be known
before the file exists. The exclusive create of the file is the final guard.
"""

from __future__ import annotations

import os
import re
import threading
import time

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_TIME_CHARS = 11
_PID_CHARS = 5
QUEUE_ID_LENGTH = _TIME_CHARS + _PID_CHARS
QUEUE_ID_RE = re.compile(rf"^[{ALPHABET}]{{{QUEUE_ID_LENGTH}}}$")

_lock = threading.Lock()
_last_us = 0
_pid_cache: tuple[int, str] | None = None


def _encode(value: int, width: int) -> str:
    out = []
    for _ in range(width):
        out.append(ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(out))


def _decode(text: str) -> int:
    value = 0
    for ch in text:
        value = (value << 5) | ALPHABET.index(ch)
    return value


def new_queue_id() -> str:
    """A fresh id; thread-safe and fork-safe (the pid part is re-read after a fork)."""
    global _last_us, _pid_cache
    pid = os.getpid()
    if _pid_cache is None or _pid_cache[0] != pid:
        _pid_cache = (pid, _encode(pid & ((1 << (5 * _PID_CHARS)) - 1), _PID_CHARS))
        _last_us = 0
    with _lock:
        now = time.time_ns() // 1000
        if now <= _last_us:
            now = _last_us + 1
        _last_us = now
    return _encode(now, _TIME_CHARS) + _pid_cache[1]


def is_queue_id(text: str) -> bool:
    """True for a well-formed id; operator input and directory entries are checked with this."""
    return bool(QUEUE_ID_RE.match(text))


def queue_id_time(qid: str) -> float:
    """The creation time encoded in an id, in seconds since the epoch."""
    return _decode(qid[:_TIME_CHARS]) / 1_000_000
