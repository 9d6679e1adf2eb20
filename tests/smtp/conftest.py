"""Test doubles and harness for the SMTP engine: a file-writing backend and a server in a thread."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dovetail.smtp.backend import Envelope, SessionInfo
from dovetail.smtp.events import MailParams, RcptParams
from dovetail.smtp.limits import Limits
from dovetail.smtp.reply import Reply
from dovetail.smtp.server import SmtpServer


@dataclass
class Stored:
    queue_id: str
    envelope: Envelope
    session: SessionInfo
    path: Path
    writes: list[int] = field(default_factory=list)
    state: str = "open"  # open | committed | aborted

    def read(self) -> bytes:
        return self.path.read_bytes()

    def body(self) -> bytes:
        """The message as the client sent it: everything after the engine's Received: header."""
        data = self.read()
        assert data.startswith(b"Received: ")
        i = 0
        while True:
            j = data.index(b"\r\n", i)
            i = j + 2
            if data[i : i + 1] != b"\t":
                return data[i:]


class FileSink:
    def __init__(self, stored: Stored, backend: FileBackend) -> None:
        self.queue_id = stored.queue_id
        self.stored = stored
        self.backend = backend
        self.file = open(stored.path.with_suffix(".tmp"), "wb")  # noqa: SIM115

    async def write(self, data: bytes) -> None:
        assert self.stored.state == "open"
        self.stored.writes.append(len(data))
        self.file.write(data)
        if self.backend.write_gate is not None:
            await self.backend.write_gate.wait()

    async def commit(self) -> Reply:
        assert self.stored.state == "open"
        if self.backend.commit_gate is not None:
            self.backend.commit_entered.set()
            await self.backend.commit_gate.wait()
        self.file.close()
        os.replace(self.stored.path.with_suffix(".tmp"), self.stored.path)
        self.stored.state = "committed"
        return Reply(250, "2.0.0", f"Ok: queued as {self.queue_id}")

    async def abort(self) -> None:
        self.file.close()
        self.stored.path.with_suffix(".tmp").unlink(missing_ok=True)
        self.stored.state = "aborted"


class FileBackend:
    """Stands in for the queue and directory: files in a tmp dir, a few fixed rejections."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.messages: list[Stored] = []
        self.sender_checks: list[tuple[str, MailParams]] = []
        self.recipient_checks: list[tuple[str, RcptParams]] = []
        self.refused_logins: list[tuple[str, str]] = []
        self.write_gate: asyncio.Event | None = None
        self.commit_gate: asyncio.Event | None = None
        self.commit_entered = asyncio.Event()
        self._ids = itertools.count(1)

    async def check_sender(self, session: SessionInfo, address: str, params: MailParams) -> Reply | None:
        self.sender_checks.append((address, params))
        if address == "spammer@bad.example":
            return Reply(554, "5.7.1", f"<{address}>: Sender address rejected: Access denied")
        return None

    async def check_recipient(self, session: SessionInfo, address: str, params: RcptParams) -> Reply | None:
        self.recipient_checks.append((address, params))
        local, _, domain = address.rpartition("@")
        if domain == "elsewhere.example":
            return Reply(554, "5.7.1", f"<{address}>: Relay access denied")
        if local.startswith("unknown"):
            return Reply(550, "5.1.1", f"<{address}>: Recipient address rejected: User unknown")
        if local == "full":
            return Reply(452, "4.2.2", f"<{address}>: Mailbox full")
        return None

    async def open_message(self, session: SessionInfo, envelope: Envelope) -> FileSink:
        qid = f"Q{next(self._ids):06X}"
        stored = Stored(
            qid, envelope, SessionInfo(**{k: getattr(session, k) for k in session.__slots__}), self.root / f"{qid}.eml"
        )
        self.messages.append(stored)
        return FileSink(stored, self)

    async def authenticate(self, session: SessionInfo, mechanism: str, username: str, password: str) -> str | None:
        return username if (username, password) == ("alice", "s3cret") else None

    async def refuse_login(self, session: SessionInfo, mechanism: str, username: str) -> None:
        self.refused_logins.append((mechanism, username))

    @property
    def committed(self) -> list[Stored]:
        return [m for m in self.messages if m.state == "committed"]


class ServerThread:
    """An SmtpServer on its own event loop in a background thread, so blocking clients can talk to it."""

    def __init__(self, backend: FileBackend, uvloop: bool = False, **kwargs: object) -> None:
        self.backend = backend
        self.kwargs = kwargs
        if uvloop:
            import uvloop as _uvloop

            self.loop = _uvloop.new_event_loop()
        else:
            self.loop = asyncio.new_event_loop()
        self.server: SmtpServer | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self, sock: socket.socket | None = None) -> ServerThread:
        self._thread.start()

        async def go() -> None:
            # gates must belong to the server's loop
            self.backend.commit_entered = asyncio.Event()
            self.server = SmtpServer(self.backend, **self.kwargs)  # type: ignore[arg-type]
            await self.server.start(sock=sock, host="127.0.0.1", port=0)

        self.call(go())
        return self

    def call(self, coro, timeout: float = 30):  # noqa: ANN001, ANN201
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def run(self, fn: Callable[[], object]) -> object:
        async def wrap() -> object:
            return fn()

        return self.call(wrap())

    @property
    def port(self) -> int:
        return self.server.port

    def stop(self, grace: float = 2.0) -> None:
        if self.loop.is_closed():
            return
        if self.server is not None:
            self.call(self.server.stop(grace), timeout=grace + 20)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class RawClient:
    """A plain socket speaking SMTP bytes, for pipelining, BDAT and misbehaving-client tests."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.file = self.sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> tuple[int, list[str]]:
        """One full (possibly multi-line) reply: (code, lines without the code)."""
        lines = []
        while True:
            raw = self.file.readline(4096)
            if not raw:
                raise ConnectionError(f"connection closed; got {lines!r}")
            assert raw.endswith(b"\r\n"), raw
            text = raw[:-2].decode()
            lines.append(text[4:])
            if text[3:4] == " " or len(text) == 3:
                return int(text[:3]), lines

    def replies(self, n: int) -> list[tuple[int, str]]:
        return [(code, lines[-1]) for code, lines in (self.reply() for _ in range(n))]

    def closed_by_peer(self) -> bool:
        """True when the server closed the connection (EOF or reset) with nothing more to read."""
        try:
            return self.file.read(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.fixture
def backend(tmp_path: Path) -> FileBackend:
    return FileBackend(tmp_path / "queue")


@pytest.fixture
def start_server(backend: FileBackend) -> Iterator[Callable[..., ServerThread]]:
    started: list[ServerThread] = []

    def start(
        limits: Limits | None = None, sock: socket.socket | None = None, uvloop: bool = False, **kwargs: object
    ) -> ServerThread:
        kwargs.setdefault("hostname", "mx.test")
        st = ServerThread(backend, uvloop=uvloop, limits=limits or Limits(), **kwargs).start(sock)
        started.append(st)
        return st

    yield start
    for st in started:
        st.stop()


@pytest.fixture
def server(start_server: Callable[..., ServerThread]) -> ServerThread:
    return start_server()


@pytest.fixture
def raw(server: ServerThread) -> Iterator[RawClient]:
    client = RawClient(server.port)
    assert client.reply()[0] == 220
    yield client
    client.close()
