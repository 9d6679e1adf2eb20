"""Test helpers for the IMAP tests: a server in a background thread and a raw line client."""

from __future__ import annotations

import asyncio
import importlib.util
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from dovetail.imap.server import ImapServer


class ServerThread:
    """An ImapServer on 127.0.0.1:0 running in its own event loop in a background thread."""

    def __init__(self, server: ImapServer) -> None:
        self.server = server
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = asyncio.run_coroutine_threadsafe(server.start(host="127.0.0.1", port=0), self.loop).result(10)

    def call(self, fn: Callable[[], Any]) -> Any:
        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def stop(self, grace: float = 1.0) -> None:
        if not self.thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self.server.stop(grace), self.loop).result(grace + 15)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def have_storage() -> bool:
    return importlib.util.find_spec("dovetail.maildir.storage") is not None


needs_storage = pytest.mark.skipif(not have_storage(), reason="Maildir storage not available")


class RawClient:
    """A line-level IMAP client on a real socket, for what imaplib will not send."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        self.greeting = self.readline()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def readline(self, timeout: float | None = None) -> bytes:
        deadline = time.monotonic() + (timeout or self.sock.gettimeout() or 5.0)
        while b"\r\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no line; have {self.buf[:200]!r}")
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed; have {self.buf[:200]!r}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read_bytes(self, n: int, timeout: float = 5.0) -> bytes:
        deadline = time.monotonic() + timeout
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("literal incomplete")
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed inside a literal")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def fetch_literal(self, tag: bytes, command: bytes) -> bytes | None:
        """Send a FETCH asking for one literal item; return the literal (``{n}`` or ``~{n}``) or None."""
        import re

        self.send(tag + b" " + command + b"\r\n")
        found = None
        while True:
            line = self.readline()
            m = re.search(rb"~?\{(\d+)\}$", line)
            if m and line.startswith(b"* "):
                found = self.read_bytes(int(m.group(1)))
                continue
            if line.startswith(tag + b" "):
                return found

    def read_until_tagged(self, tag: bytes, timeout: float | None = None) -> list[bytes]:
        out = []
        while True:
            line = self.readline(timeout)
            out.append(line)
            if line.startswith(tag + b" "):
                return out

    def cmd(self, line: bytes, timeout: float | None = None) -> list[bytes]:
        tag = line.split(b" ", 1)[0]
        self.send(line + b"\r\n")
        return self.read_until_tagged(tag, timeout)

    def closed(self, timeout: float = 5.0) -> bool:
        """True when the server closes the connection (after any remaining lines)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except OSError:
            return True

    def close(self) -> None:
        self.sock.close()
