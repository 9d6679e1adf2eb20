"""Change notification for IDLE: inotify through ctypes on Linux, mtime polling elsewhere.

inotify watches ``new/`` and ``cur/`` (deliveries land in ``new/``; flag changes and expunges rename or
unlink in ``cur/``), so a wake-up comes within milliseconds. In an event loop all watchers share one
inotify instance (the kernel allows only ``fs.inotify.max_user_instances``, 128 by default, per user)
with one watch per folder directory; its fd is read by the loop and each event wakes the sessions
waiting on that folder, so an idle session costs nothing until mail arrives. Without inotify the
watcher stats both directories and ``dovecot-uidlist`` every 0.25 s, well inside the one-second
promise. The stdlib has no inotify binding, hence ctypes.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import os
import select
import struct
import sys
import time
from pathlib import Path

from dovetail.maildir.stamps import stamp_of

IN_MODIFY = 0x002
IN_ATTRIB = 0x004
IN_CLOSE_WRITE = 0x008
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
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
        _libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
    except (OSError, AttributeError):
        _libc = None


def _inotify_libc() -> ctypes.CDLL:
    """The C library with inotify; only called where inotify was found at start."""
    if _libc is None:
        raise OSError(errno.ENOSYS, "inotify is not available")
    return _libc


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
        return stamp_of(str(p) for p in self.paths)

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


_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (then len bytes of name)


class _Hub:
    """The one inotify instance of an event loop: watches per folder, generation counters, waiters."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        assert _libc is not None
        fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self.fd = fd
        self.loop = loop
        self.folder_of: dict[int, str] = {}  # watch descriptor -> folder key
        self.wds: dict[str, list[int]] = {}
        self.users: dict[str, int] = {}
        self.gen: dict[str, int] = {}
        self.waiters: dict[str, set[asyncio.Future[bool]]] = {}
        loop.add_reader(fd, self._on_readable)

    def add(self, key: str, dirs: list[Path]) -> None:
        if key not in self.wds:
            wds: list[int] = []
            libc = _inotify_libc()
            for d in dirs:
                wd = libc.inotify_add_watch(self.fd, os.fsencode(d), MASK | IN_DELETE_SELF | IN_MOVE_SELF)
                if wd < 0:
                    for w in wds:
                        self._forget_wd(w)
                    raise OSError(ctypes.get_errno(), f"inotify_add_watch {d} failed")
                wds.append(wd)
                self.folder_of[wd] = key
            self.wds[key] = wds
            self.gen.setdefault(key, 0)
        self.users[key] = self.users.get(key, 0) + 1

    def _forget_wd(self, wd: int) -> None:
        self.folder_of.pop(wd, None)
        _inotify_libc().inotify_rm_watch(self.fd, wd)

    def release(self, key: str) -> None:
        left = self.users.get(key, 0) - 1
        if left > 0:
            self.users[key] = left
            return
        self.users.pop(key, None)
        self.gen.pop(key, None)
        for wd in self.wds.pop(key, []):
            self._forget_wd(wd)
        if not self.users:
            self.close()

    def _wake(self, key: str) -> None:
        self.gen[key] = self.gen.get(key, 0) + 1
        for fut in self.waiters.pop(key, ()):
            if not fut.done():
                fut.set_result(True)

    def _on_readable(self) -> None:
        touched: set[str] = set()
        overflow = False
        while True:
            try:
                data = os.read(self.fd, 65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                overflow = True
                break
            if not data:
                break
            pos = 0
            while pos + _EVENT.size <= len(data):
                wd, mask, _cookie, length = _EVENT.unpack_from(data, pos)
                pos += _EVENT.size + length
                if mask & IN_Q_OVERFLOW:
                    overflow = True
                    continue
                key = self.folder_of.get(wd)
                if key is None:
                    continue
                touched.add(key)
                if mask & IN_IGNORED:
                    self.folder_of.pop(wd, None)
        for key in list(self.gen) if overflow else touched:
            self._wake(key)

    def close(self) -> None:
        if self.fd < 0:
            return
        try:
            self.loop.remove_reader(self.fd)
        except Exception:  # noqa: BLE001 - the loop may be closed already
            pass
        os.close(self.fd)
        self.fd = -1
        for futs in self.waiters.values():
            for fut in futs:
                if not fut.done():
                    fut.set_result(True)
        self.waiters.clear()
        if _HUBS.get(self.loop) is self:
            del _HUBS[self.loop]


_HUBS: dict[asyncio.AbstractEventLoop, _Hub] = {}


class SharedWatcher:
    """A folder watcher on the running loop's shared inotify instance; a private inotify instance
    (created on first use) serves blocking :meth:`wait` calls outside an event loop."""

    def __init__(self, dirs: list[Path]) -> None:
        self.dirs = dirs
        self.key = str(dirs[0].parent)
        self._hub: _Hub | None = None
        self._gen = 0
        self._blocking: InotifyWatcher | None = None
        self._polling: PollingWatcher | None = None

    def _attach(self) -> _Hub:
        hub = self._hub
        if hub is not None and hub.fd >= 0:
            return hub
        loop = asyncio.get_running_loop()
        hub = _HUBS.get(loop)
        if hub is None or hub.fd < 0:
            hub = _Hub(loop)
            _HUBS[loop] = hub
        try:
            hub.add(self.key, self.dirs)
        except OSError:
            if not hub.users:
                hub.close()
            raise
        self._hub = hub
        # Whatever happened before the watch existed is unknown: the first wait answers "maybe changed".
        self._gen = hub.gen[self.key] - 1
        return hub

    async def wait_async(self, max_wait: float) -> bool:
        if self._polling is None:
            try:
                hub = self._attach()
            except OSError:
                self._polling = PollingWatcher([*self.dirs, self.dirs[0].parent / "dovecot-uidlist"])
        if self._polling is not None:
            return await self._polling.wait_async(max_wait)
        if hub.gen.get(self.key, 0) != self._gen:
            self._gen = hub.gen.get(self.key, 0)
            return True
        fut: asyncio.Future[bool] = hub.loop.create_future()
        hub.waiters.setdefault(self.key, set()).add(fut)
        try:
            await asyncio.wait_for(fut, max(0.0, max_wait))
        except TimeoutError:
            return False
        finally:
            waiting = hub.waiters.get(self.key)
            if waiting is not None:
                waiting.discard(fut)
        self._gen = hub.gen.get(self.key, 0)
        return True

    def wait(self, timeout: float) -> bool:
        if self._blocking is None:
            self._blocking = InotifyWatcher(self.dirs)
        return self._blocking.wait(timeout)

    def close(self) -> None:
        hub, self._hub = self._hub, None
        if hub is not None and hub.fd >= 0:
            hub.release(self.key)
        if self._blocking is not None:
            self._blocking.close()
            self._blocking = None


def watch_folder(path: Path, *, polling: bool = False) -> SharedWatcher | InotifyWatcher | PollingWatcher:
    """A watcher for ``path``: the shared inotify one in an event loop (a private instance for
    blocking waits); mtime polling when inotify is missing or ``polling``."""
    dirs = [path / "new", path / "cur"]
    if _libc is not None and not polling:
        for d in dirs:
            if not d.is_dir():
                break
        else:
            return SharedWatcher(dirs)
    return PollingWatcher([*dirs, path / "dovecot-uidlist"])
