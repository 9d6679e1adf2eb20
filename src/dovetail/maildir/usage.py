"""Mailbox usage from the Maildir itself: the ``,S=<size>`` fields of its file names, counted once.

That is how Dovecot's Maildir++ quota counts without opening files; a name without ``,S=``
(written by another agent) is measured with ``stat``. Every ``cur/`` and ``new/`` of the Maildir
and of its ``.Sub`` folders is counted; names starting with a dot are not messages.

Each directory's sum is cached in the process with the directory's mtime, so a check rescans
only directories that changed since the last one: a quota check per RCPT and per delivery costs a
few ``stat`` calls. A sum is trusted only when the directory's mtime was older than the listing by
more than a clock tick of the file system (``DIRTY_SECONDS``), since a change within the same tick
leaves the mtime as it was (the rule Dovecot's maildir sync follows). This stands in for Dovecot's
``maildirsize`` file, which needs a lock shared with the IMAP side.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path

from dovetail.maildir.filename import size_in_name
from dovetail.storage.api import Usage

DIRTY_SECONDS = 1.0
_CACHE_MAX = 100_000

_dirs: dict[str, tuple[int, int, int]] = {}  # directory -> (mtime_ns, bytes, messages), trusted sums only
_lock = threading.Lock()


def maildir_usage(root: Path) -> Usage:
    """Bytes and messages in a Maildir++ and its ``.Sub`` folders; nothing when it does not exist."""
    folders = [str(root)]
    with contextlib.suppress(FileNotFoundError, NotADirectoryError), os.scandir(root) as it:
        folders += [
            e.path
            for e in it
            if e.name.startswith(".") and e.name not in (".", "..") and e.is_dir(follow_symlinks=False)
        ]
    size = count = 0
    for folder in folders:
        for sub in ("cur", "new"):
            s, c = _dir_usage(os.path.join(folder, sub))
            size, count = size + s, count + c
    return Usage(size, count)


def _dir_usage(path: str) -> tuple[int, int]:
    try:
        mtime = os.stat(path).st_mtime_ns
    except (FileNotFoundError, NotADirectoryError):
        return 0, 0
    with _lock:
        cached = _dirs.get(path)
    if cached is not None and cached[0] == mtime:
        return cached[1], cached[2]
    listed_at = time.time()
    size = count = 0
    with contextlib.suppress(FileNotFoundError, NotADirectoryError), os.scandir(path) as it:
        for entry in it:
            name = entry.name
            if name.startswith("."):
                continue
            known = size_in_name(name)
            if known is None:
                try:
                    known = entry.stat(follow_symlinks=False).st_size
                except FileNotFoundError:
                    continue
            size += known
            count += 1
    with _lock:
        if mtime / 1e9 + DIRTY_SECONDS < listed_at:
            if len(_dirs) >= _CACHE_MAX:
                _dirs.clear()
            _dirs[path] = (mtime, size, count)
        else:
            _dirs.pop(path, None)
    return size, count
