"""Folder stamps: the stat data of ``cur/``, ``new/``, ``dovecot-uidlist`` and ``dovecot-keywords``
that tells whether a folder can have changed since a listing, and when such a stamp can be trusted.

A stamp cannot show a change made in the same clock tick as the one it was taken in. As Dovecot does
(``MAILDIR_SYNC_SECS``), a stamp too close to the listing that confirmed it is "dirty": it is trusted
only until that delay has passed, and the directories are listed once more then.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Iterable

# A directory stamp less than this older than the listing that checked it may hide a change made in the
# same clock tick; such a folder is listed again once this much time has passed. Dovecot's 1 s suits
# file systems with whole-second times; with sub-second times the clock tick is a few milliseconds, and
# half a second keeps a delivery that raced with our own change inside IDLE's one-second promise while
# a busy folder is listed twice a second at most (each listing of a large folder costs milliseconds).
DIRTY_SECONDS = 1.0
DIRTY_SECONDS_FINE = 0.5
# After a command that may leave the disk for later (FETCH, STORE, SEARCH, SORT, THREAD, COPY), a sync
# looks at the folder's files only when its last look is older than this; the index, which every
# Dovetail writer records its changes in, is read after every command all the same. Dovecot does the
# same for these commands (``MAILBOX_SYNC_FLAG_FAST``, ``MAILBOX_FULL_SYNC_INTERVAL`` of 5 s): what other
# programs write (a delivery, Dovecot, Postfix) shows at the next NOOP, CHECK, IDLE or SELECT at once,
# and after any command once this long has passed.
FULL_SYNC_SECONDS = 1.0
CUR, NEW, UIDLIST_STAMP, KEYWORDS_STAMP = range(4)  # the parts of a folder stamp


def stamp_of(paths: Iterable[str]) -> tuple:
    """(mtime in ns, size, inode) of each path, None for a missing one."""
    out: list[tuple[int, int, int] | None] = []
    for name in paths:
        try:
            st = os.stat(name)
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
        except FileNotFoundError:
            out.append(None)
    return tuple(out)


def is_dirty(stamp: tuple, checked_at: float, window: float) -> bool:
    """Whether a change could hide behind ``stamp``: its newest time is too close to the listing."""
    newest = max((part[0] for part in stamp if part is not None), default=0) / 1e9
    return newest + window > checked_at


def dirty_window(stamp: tuple) -> float:
    """How close to its listing a stamp is dirty: ``DIRTY_SECONDS_FINE`` when the file system keeps
    sub-second times (a clock tick is then milliseconds), else ``DIRTY_SECONDS``."""
    fine = any(part is not None and part[0] % 1_000_000_000 for part in stamp)
    return DIRTY_SECONDS_FINE if fine else DIRTY_SECONDS


def trusted(stamp: tuple, checked_at: float, now: float) -> bool:
    """Whether ``stamp``, confirmed by a listing at ``checked_at``, can be taken as is at ``now``."""
    return now < trusted_until(stamp, checked_at)


@functools.lru_cache(maxsize=256)
def trusted_until(stamp: tuple, checked_at: float) -> float:
    """Until when ``stamp``, confirmed by a listing at ``checked_at``, can be taken as is (infinity for
    a clean stamp): what :func:`trusted` compares the time with, for callers that ask again and again.
    Kept per (stamp, listing): every refresh of every session asks of the same few (hashing them costs
    less than working it out again)."""
    window = dirty_window(stamp)
    return checked_at + window if is_dirty(stamp, checked_at, window) else math.inf


def encode(stamp: tuple | None) -> str:
    """A stamp as the index keeps it."""
    return "" if stamp is None else repr(stamp)
