"""A mailbox node in one process: a real SQLite directory, Maildirs, lmtpd on a loopback socket."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dovetail.db import make_engine, migrate
from dovetail.delivery.agent import MaildirConfig, MaildirDeliveryAgent
from dovetail.directory import Directory, Resolver
from dovetail.intake.lmtp import LmtpBackend, network_gate
from dovetail.intake.local import mailbox_targets
from dovetail.queue import Queue
from dovetail.smtp.server import SmtpServer


@dataclass
class Node:
    root: Path
    directory: Directory
    resolver: Resolver
    queue: Queue

    def backend(self) -> LmtpBackend:
        agent = MaildirDeliveryAgent(mailbox_targets(self.resolver), MaildirConfig())
        return LmtpBackend(self.resolver, agent, spool_dir=self.root / "spool")

    def server(self, allowed: tuple[str, ...] = ("127.0.0.0/8",)) -> SmtpServer:
        return SmtpServer(self.backend(), hostname="mbox.test", listener="lmtp", lmtp=True,
                          admit=network_gate(list(allowed)))

    def maildir(self, address: str) -> Path:
        return self.resolver.resolve(address).mailboxes[0].maildir

    def messages(self, address: str) -> list[bytes]:
        box = self.maildir(address)
        return [p.read_bytes() for sub in ("new", "cur") if (box / sub).is_dir() for p in sorted((box / sub).iterdir())]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    engine = make_engine(f"sqlite:///{tmp_path / 'dovetail.db'}")
    migrate(engine)
    directory = Directory(engine)
    directory.tenant_add("acme")
    directory.domain_add("acme.example", "acme")
    for box in ("bob", "carol", "full"):
        directory.mailbox_add(f"{box}@acme.example", None, quota_bytes=1000 if box == "full" else 0)
    directory.alias_add("team@acme.example", ["bob@acme.example", "carol@acme.example"])
    directory.alias_add("away@acme.example", ["someone@elsewhere.example"])
    (tmp_path / "spool").mkdir()
    resolver = Resolver(directory, tmp_path / "mail", check_interval=0)
    made = Node(tmp_path, directory, resolver, Queue(tmp_path / "queue"))
    yield made
    engine.dispose()


async def talk(port: int, lines: list[bytes]) -> list[str]:
    """Send each line (or block) in turn and collect every reply line the server sends until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"".join(lines))
    await writer.drain()
    out = (await asyncio.wait_for(reader.read(), 30)).decode()
    writer.close()
    return out.split("\r\n")[:-1]
