"""Waking the webhook dispatcher from another process: one datagram on a socket in ``run/``.

Replies delivered locally are stored by the queue manager's processes, while the dispatcher runs in
the replies service. Without a signal it would find their events only at its next poll (a quarter
second on average, per event). The replies service binds ``run/replies.wake`` (a Unix datagram
socket); a process that stored events sends it one empty datagram after its commit. The signal
carries no data and may be lost (a full socket buffer, a service restarting): the poll stays as the
fallback, so correctness never depends on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable
from pathlib import Path

WAKE_SOCKET = "replies.wake"


def wake_path(run_dir: Path) -> Path:
    return Path(run_dir) / WAKE_SOCKET


class WakeSender:
    """Sends the wake-up datagram; never blocks and never raises."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self._sock: socket.socket | None = None

    def __call__(self) -> None:
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.setblocking(False)
            self._sock.sendto(b"", self.path)
        except OSError:
            pass  # nobody listening, or its buffer is full (a wake-up is pending anyway)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class WakeListener:
    """Binds the wake socket and calls ``on_wake`` on the event loop for every datagram batch."""

    def __init__(self, path: Path, on_wake: Callable[[], None]) -> None:
        self.path = Path(path)
        self.on_wake = on_wake
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # left by a service that was killed
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.bind(str(self.path))
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        assert self._sock is not None
        for _ in range(256):  # drain what is queued: one wake-up stands for them all
            try:
                self._sock.recv(16)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
        self.on_wake()

    def stop(self) -> None:
        if self._sock is None:
            return
        if self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        self._sock = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
