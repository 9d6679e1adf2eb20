"""Change notification for IDLE: inotify through ctypes on Linux, mtime polling elsewhere.

inotify watches ``new/`` and ``cur/`` (deliveries land in ``new/``; flag changes and expunges rename or
unlink in ``cur/``), so a wake-up comes within milliseconds. Without inotify the watcher stats both
directories and ``dovecot-uidlist`` every 0.25 s, well inside the one-second promise. The stdlib has
no inotify binding, hence ctypes.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import select
import sys
import time
from pathlib import Path

IN_MODIFY = 0x002
IN_ATTRIB = 0x004
IN_CLOSE_WRITE = 0x008
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
MASK = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_CLOSE_WRITE | IN_ATTRIB
POLL_INTERVAL = 0.25

_libc = None
if sys.platform.startswith("linux"):
    try:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        _libc.inotify_init1.argtypes = [ctypes.c_int]
        _libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    except (OSError, AttributeError):
        _libc = None


class InotifyWatcher:
    def __init__(self, dirs: list[Path]) -> None:
        assert _libc is not None
        fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self.fd = fd
        for d in dirs:
            if _libc.inotify_add_watch(fd, os.fsencode(d), MASK) < 0:
                os.close(fd)
                raise OSError(ctypes.get_errno(), f"inotify_add_watch {d} failed")

    def _drain(self) -> bool:
        got = False
        while True:
            try:
                if not os.read(self.fd, 65536):
                    break
                got = True
            except BlockingIOError:
                break
        return got

    def wait(self, timeout: float) -> bool:
        if self._drain():
            return True
        ready, _, _ = select.select([self.fd], [], [], max(0.0, timeout))
        return self._drain() if ready else False

    async def wait_async(self, max_wait: float) -> bool:
        if self._drain():
            return True
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()

        def ready() -> None:
            if not fut.done():
                fut.set_result(True)

        loop.add_reader(self.fd, ready)
        try:
            await asyncio.wait_for(fut, max_wait)
        except TimeoutError:
            return False
        finally:
            loop.remove_reader(self.fd)
        return self._drain()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class PollingWatcher:
    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self.last = self._stamp()

    def _stamp(self) -> tuple:
        out = []
        for p in self.paths:
            try:
                st = os.stat(p)
                out.append((st.st_mtime_ns, st.st_size, st.st_ino))
            except FileNotFoundError:
                out.append(None)
        return tuple(out)

    def _changed(self) -> bool:
        now = self._stamp()
        if now != self.last:
            self.last = now
            return True
        return False

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if self._changed():
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(POLL_INTERVAL, left))

    async def wait_async(self, max_wait: float) -> bool:
        deadline = time.monotonic() + max_wait
        while True:
            if self._changed():
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            await asyncio.sleep(min(POLL_INTERVAL, left))

    def close(self) -> None:
        pass


def watch_folder(path: Path, *, polling: bool = False) -> InotifyWatcher | PollingWatcher:
    dirs = [path / "new", path / "cur"]
    if _libc is not None and not polling:
        try:
            return InotifyWatcher(dirs)
        except OSError:
            pass
    return PollingWatcher([*dirs, path / "dovecot-uidlist"])
