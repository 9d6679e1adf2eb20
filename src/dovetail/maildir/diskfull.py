"""Recognising "the disk cannot take more" among the errors of file and SQLite writes.

A full file system (``ENOSPC``), an exhausted disk quota (``EDQUOT``) and SQLite's ``SQLITE_FULL`` all
mean the same to a mailbox: what is already stored stays readable and changeable (renames and unlinks
need no room), only new data cannot be written. The index then lives in memory for a while (see
:mod:`~dovetail.maildir.indexdb`) and APPEND/COPY are refused with a clear answer, never a server bug.
"""

from __future__ import annotations

import errno
import sqlite3

_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# SQLite's primary result codes (the low byte of an extended code) that say the file cannot be
# written now, as opposed to a corrupt file (which is rebuilt) or a lock held by another writer.
SQLITE_READONLY = 8
SQLITE_IOERR = 10
SQLITE_FULL = 13
SQLITE_CANTOPEN = 14
_UNWRITABLE_CODES = frozenset({SQLITE_READONLY, SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN})


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk (or the user's disk quota) has no room for what was written."""
    if isinstance(exc, OSError):
        return exc.errno in _FULL_ERRNOS
    if isinstance(exc, sqlite3.Error):
        return (getattr(exc, "sqlite_errorcode", 0) & 0xFF) == SQLITE_FULL or "disk is full" in str(exc)
    return False


def index_unwritable(exc: BaseException) -> bool:
    """Whether a SQLite error says the index file cannot be written now (full disk, I/O error, read-only
    or unopenable file), so the index goes on in memory instead of failing the command."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if code:
        return code in _UNWRITABLE_CODES
    text = str(exc)
    return "disk is full" in text or "disk I/O error" in text or "readonly database" in text
