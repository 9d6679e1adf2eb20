"""Mailbox usage from the Maildir itself: the sum of the ``,S=<size>`` fields of its file names.

That is how Dovecot's Maildir++ quota counts without opening files; a name without ``,S=``
(written by another agent) is measured with ``stat``. Results are cached briefly because the
domain page shows a quota bar per mailbox.
"""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

_SIZE_RE = re.compile(r",S=(\d+)")
_CACHE_SECONDS = 30.0
_cache: dict[Path, tuple[float, int, int]] = {}
_lock = threading.Lock()


def _scan(folder: Path) -> tuple[int, int]:
    size = count = 0
    for sub in ("cur", "new"):
        try:
            with os.scandir(folder / sub) as it:
                for entry in it:
                    if entry.name.startswith("."):
                        continue
                    m = _SIZE_RE.search(entry.name)
                    if m:
                        size += int(m.group(1))
                    else:
                        try:
                            size += entry.stat().st_size
                        except FileNotFoundError:
                            continue
                    count += 1
        except (FileNotFoundError, NotADirectoryError):
            continue
    return size, count


def maildir_usage(root: Path) -> tuple[int, int]:
    """(bytes, messages) in a Maildir++ and its ``.Sub`` folders; (0, 0) when it does not exist."""
    now = time.monotonic()
    with _lock:
        hit = _cache.get(root)
        if hit and now - hit[0] < _CACHE_SECONDS:
            return hit[1], hit[2]
    size, count = _scan(root)
    try:
        with os.scandir(root) as it:
            for entry in it:
                if entry.name.startswith(".") and entry.name not in (".", "..") and entry.is_dir():
                    s, c = _scan(Path(entry.path))
                    size, count = size + s, count + c
    except (FileNotFoundError, NotADirectoryError):
        pass
    with _lock:
        if len(_cache) > 100_000:
            _cache.clear()
        _cache[root] = (now, size, count)
    return size, count


def forget(root: Path) -> None:
    with _lock:
        _cache.pop(root, None)
