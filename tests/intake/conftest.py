"""Fixtures of the MX policy tests: a real MX on loopback for the abuse-defence tests (directory, queue,
rate counts in a run/ file, greylist in the database; clients connect from chosen 127.x.y.z or ::1 source
addresses), and a private rspamd, ClamAV milter and loopback DNS server for the content-filter tests."""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from dovetail.db import make_engine, migrate
from dovetail.directory import Directory, Resolver
from dovetail.intake.greylist import Greylist, GreylistSettings
from dovetail.intake.mx import MxBackend
from dovetail.intake.ratelimit import RateLimits, RatePolicy, SqliteWindows
from dovetail.queue import Queue
from dovetail.smtp.limits import Limits
from dovetail.smtp.server import SmtpServer
from tests.clamav_server import ClamavMilter
from tests.dnsserver import LoopbackDNS
from tests.rspamd_server import RspamdServer
from tests.support import require_tool

HOST = "mx.ours.test"


@dataclass
class Mx:
    root: Path
    engine: Engine
    directory: Directory
    resolver: Resolver
    queue: Queue
    counts: dict[str, int] = field(default_factory=dict)
    servers: list[SmtpServer] = field(default_factory=list)

    def record(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1

    def backend(self, rates: RateLimits | None = None, greylist: GreylistSettings | None = None,
                clock=None) -> MxBackend:  # noqa: ANN001
        """A backend as one smtpd worker builds it (its own handle on the shared rate file)."""
        policy = None
        if rates is not None:
            kwargs = {"clock": clock} if clock is not None else {}
            policy = RatePolicy(rates, SqliteWindows(self.root / "run" / "mx-rates.sqlite"), record=self.record,
                                hostname=HOST, **kwargs)
        gl = None
        if greylist is not None:
            gl = Greylist(self.engine, greylist, **({"clock": clock} if clock is not None else {}))
        return MxBackend(self.resolver, self.queue, record=self.record, rates=policy, greylist=gl)

    async def start(self, backend: MxBackend, limits: Limits | None = None, host: str = "127.0.0.1") -> int:
        server = SmtpServer(backend, limits, hostname=HOST, listener="mx")
        await server.start(host=host, port=0)
        self.servers.append(server)
        return server.port

    async def stop(self) -> None:
        await asyncio.gather(*(s.stop(1) for s in self.servers))


@pytest.fixture
def mx(tmp_path: Path) -> Iterator[Mx]:
    engine = make_engine(f"sqlite:///{tmp_path / 'dovetail.db'}")
    migrate(engine)
    directory = Directory(engine)
    directory.tenant_add("acme")
    directory.domain_add("acme.example", "acme")
    directory.domain_add("quiet.example", "acme")
    directory.mailbox_add("bob@acme.example", None)
    directory.mailbox_add("eve@quiet.example", None)
    (tmp_path / "run").mkdir()
    yield Mx(tmp_path, engine, directory, Resolver(directory, tmp_path / "mail", check_interval=0),
             Queue(tmp_path / "queue"))
    engine.dispose()


class Client:
    """A line-level SMTP client bound to a chosen source address (simulates many clients and networks)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int, source: str = "127.0.0.1", host: str = "127.0.0.1") -> Client:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0), family=family)
        return cls(reader, writer)

    async def reply(self) -> tuple[int, str]:
        """One (possibly multi-line) reply: its code and its last line's text; (0, "") at EOF."""
        while True:
            line = (await asyncio.wait_for(self.reader.readline(), 20)).decode()
            if not line:
                return 0, ""
            if line[3:4] != "-":
                return int(line[:3]), line[4:].rstrip("\r\n")

    async def cmd(self, line: str) -> tuple[int, str]:
        self.writer.write(line.encode() + b"\r\n")
        await self.writer.drain()
        return await self.reply()

    async def closed(self) -> bool:
        return await asyncio.wait_for(self.reader.read(), 20) == b""

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass


async def session(port: int, source: str = "127.0.0.1", host: str = "127.0.0.1") -> Client:
    """A client past the banner and EHLO."""
    c = await Client.connect(port, source, host)
    code, text = await c.reply()
    assert code == 220, text
    assert (await c.cmd("EHLO client.test"))[0] == 250
    return c


@pytest.fixture(scope="session")
def session_dns() -> Iterator[LoopbackDNS]:
    with LoopbackDNS() as server:
        yield server


@pytest.fixture(scope="session")
def rspamd(tmp_path_factory: pytest.TempPathFactory, session_dns: LoopbackDNS) -> Iterator[RspamdServer]:
    """One private rspamd for the session."""
    require_tool("rspamd")
    with RspamdServer(tmp_path_factory.mktemp("rspamd"), session_dns.port) as server:
        yield server


@pytest.fixture(scope="session")
def clamav(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClamavMilter]:
    """clamd and clamav-milter with a signature of their own for EICAR (none can be downloaded here)."""
    require_tool(shutil.which("clamd") or "/usr/sbin/clamd", shutil.which("clamav-milter") or "/usr/sbin/clamav-milter")
    with ClamavMilter(tmp_path_factory.mktemp("clamav")) as server:
        yield server
