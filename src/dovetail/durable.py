"""Writing bytes so that they survive a crash: every byte written (``os.write`` may write less than it
was given), then ``fsync``. The queue, the Maildir writer and ``dovecot-uidlist`` share it."""

from __future__ import annotations

import os


def write_fsync(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` and flush it to stable storage."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.fsync(fd)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush a folder's entries (a file created, renamed or unlinked in it) to stable storage."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
