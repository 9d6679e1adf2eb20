"""One ``fsync`` of a Maildir folder's directory for all the deliveries that linked into it meanwhile.

A delivered message is durable once its file's data is on disk and its name in ``new/`` is too; the
second takes an ``fsync`` of the directory. Deliveries to one mailbox at the same time (a busy
mailbox, a replies intake, a campaign's reply inbox) each used to pay their own directory fsync,
one after the other on the disk. A directory fsync makes durable every entry made before it
*started*, so deliveries can share one: each delivery, after its ``link``, waits for an fsync that
started after that link, and starts one itself when none is running (group commit, as databases
do for their log). With N deliveries linking while one fsync runs, the next fsync covers all N.

The guarantee each caller gets is unchanged: when ``sync_directory`` returns, a directory fsync
that began after the caller's call began has completed successfully. A failed fsync raises in
the thread that ran it; the threads waiting on it run their own, so each of them still either
sees a successful fsync that covers its entry or gets the error.

Only threads of one process share an fsync (deliveries run in worker threads); processes each
sync for themselves. The table of folders keeps an entry only while someone waits on it.

One message for several mailboxes links a copy into each one's ``new/``. Synced one after the other,
each copy's folder fsync waits for a journal commit of its own; inside ``syncs_together()`` the copies
are all linked first and the folders synced at the end of the block, so the first fsync commits every
link and the others find their entries already durable (ext4, xfs and btrfs commit the whole journal,
not one directory). The caller answers only after the block, so the guarantee is the same.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator


class _Folder:
    __slots__ = ("cond", "started", "done", "running", "users", "waiting")

    def __init__(self) -> None:
        self.cond = threading.Condition(threading.Lock())
        self.started = 0  # fsyncs begun
        self.done = 0  # the highest generation whose fsync succeeded
        self.running = False
        self.users = 0
        self.waiting = 0  # threads waiting for a running fsync to end


_folders: dict[str, _Folder] = {}
_folders_lock = threading.Lock()
fsyncs = 0  # directory fsyncs this process ran (for tests and benchmarks)


def _fsync_dir(path: str) -> None:
    global fsyncs
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    fsyncs += 1


_together = threading.local()  # .folders: the folders this thread's open syncs_together() block owes a sync


@contextlib.contextmanager
def syncs_together() -> Iterator[None]:
    """Within the block, ``sync_directory`` in this thread only notes the folder; leaving the block syncs
    each noted folder once (raising the first failure). A block inside another leaves it to the outer one.
    When the block raises, nothing is synced: what it linked was never reported durable."""
    if getattr(_together, "folders", None) is not None:
        yield
        return
    folders: dict[str, None] = {}
    _together.folders = folders
    try:
        yield
    finally:
        _together.folders = None
    failure: OSError | None = None
    for key in folders:
        try:
            _sync_now(key)
        except OSError as exc:
            failure = failure or exc
    if failure is not None:
        raise failure


def sync_directory(path: str | os.PathLike[str]) -> None:
    """Return once an fsync of directory ``path`` that started after this call has completed (inside
    ``syncs_together()``: once the block ends)."""
    key = os.fspath(path)
    pending = getattr(_together, "folders", None)
    if pending is not None:
        pending[key] = None
        return
    _sync_now(key)


def _sync_now(key: str) -> None:
    with _folders_lock:
        folder = _folders.get(key)
        if folder is None:
            folder = _folders[key] = _Folder()
        folder.users += 1
    try:
        _wait_for_fsync(folder, key)
    finally:
        with _folders_lock:
            folder.users -= 1
            if folder.users == 0 and _folders.get(key) is folder:
                del _folders[key]


def _wait_for_fsync(folder: _Folder, path: str) -> None:
    cond = folder.cond
    with cond:
        # An fsync running now may have started before our entry was made: we need the next one.
        wanted = folder.started + 1
        while folder.done < wanted:
            if folder.running:
                folder.waiting += 1
                cond.wait()
                folder.waiting -= 1
                continue
            folder.running = True
            folder.started += 1
            generation = folder.started
            cond.release()
            ok = False
            try:
                _fsync_dir(path)
                ok = True
            finally:
                cond.acquire()
                folder.running = False
                if ok:
                    folder.done = max(folder.done, generation)
                cond.notify_all()
