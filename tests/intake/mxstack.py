"""A running MX for the intake tests (sender authentication, content filters): real SMTP on loopback,
the real queue, directory and Maildirs."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import aiosmtplib

from dovetail.db import make_engine, migrate
from dovetail.delivery.agent import MaildirDeliveryAgent
from dovetail.directory import Directory, Resolver
from dovetail.intake.contentfilter import ContentFilter
from dovetail.intake.direct import DirectDelivery
from dovetail.intake.local import mailbox_targets
from dovetail.intake.mx import MxBackend
from dovetail.intake.senderauth import SenderAuth
from dovetail.queue import Queue
from dovetail.queue.qfile import QueuedMessage
from dovetail.smtp.server import SmtpServer

OUR_ID = "mx.ours.test"


@dataclass
class Mx:
    root: Path
    queue: Queue
    directory: Directory
    resolver: Resolver
    auth: SenderAuth | None = None
    direct: DirectDelivery | None = None  # mx.direct_delivery: the local agent the MX delivers with
    counts: dict[str, int] = field(default_factory=dict)

    def send(self, msg: bytes, content: ContentFilter | None, *, sender: str = "alice@sender.test",
             rcpts: tuple[str, ...] = ("bob@acme.example",), helo: str = "mail.sender.test",
             source: str = "127.0.0.1") -> tuple[int, str]:
        """One SMTP transaction from ``source``; (code, text) of the reply to the end of DATA."""
        return asyncio.run(self.asend(msg, content, sender=sender, rcpts=rcpts, helo=helo, source=source))

    async def asend(self, msg: bytes, content: ContentFilter | None, *, sender: str = "alice@sender.test",
                    rcpts: tuple[str, ...] = ("bob@acme.example",), helo: str = "mail.sender.test",
                    source: str = "127.0.0.1") -> tuple[int, str]:
        backend = MxBackend(self.resolver, self.queue, auth=self.auth, record=self._count, content=content,
                            direct=self.direct)
        server = SmtpServer(backend, hostname=OUR_ID)
        await server.start(host="127.0.0.1", port=0)
        try:
            client = aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port, source_address=(source, 0),
                                     timeout=30, local_hostname=helo)
            await client.connect()
            await client.ehlo()
            await client.mail(sender)
            for rcpt in rcpts:
                await client.rcpt(rcpt)
            try:
                reply = await client.data(msg)
                code, text = reply.code, reply.message
            except aiosmtplib.SMTPDataError as exc:
                code, text = exc.code, exc.message
            await client.quit()
        finally:
            await server.stop(1)
        return code, text

    def _count(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1

    def queued(self) -> list[QueuedMessage]:
        return [QueuedMessage(qid, self.queue.path("incoming", qid)) for qid in self.queue.ids("incoming")]

    def deliver(self) -> None:
        agent = MaildirDeliveryAgent(mailbox_targets(self.resolver))
        for msg in self.queued():
            results = agent.deliver_sync(msg, msg.envelope.pending())
            assert all(r.status == "sent" for r in results), results
            self.queue.delete(msg.queue_id)

    def folder(self, address: str, name: str = "INBOX") -> list[bytes]:
        maildir = self.resolver.resolve(address).mailboxes[0].maildir
        folder = maildir if name == "INBOX" else maildir / f".{name}"
        subs = [folder / sub for sub in ("new", "cur") if (folder / sub).is_dir()]
        return [p.read_bytes() for sub in subs for p in sorted(sub.iterdir())]


def make_mx(root: Path, auth: SenderAuth | None = None) -> Mx:
    engine = make_engine(f"sqlite:///{root / 'dovetail.db'}")
    migrate(engine)
    directory = Directory(engine)
    directory.tenant_add("acme")
    directory.domain_add("acme.example", "acme")
    directory.mailbox_add("bob@acme.example", None)
    directory.mailbox_add("carol@acme.example", None)
    resolver = Resolver(directory, root / "mail", check_interval=0)
    return Mx(root, Queue(root / "queue"), directory, resolver, auth)


def message(subject: str = "Hello", body: str = "Just a note.\r\n", extra: str = "") -> bytes:
    return (f"From: Alice <alice@sender.test>\r\nTo: bob@acme.example\r\nSubject: {subject}\r\n"
            f"Date: Sun, 06 Dec 2026 18:00:00 +0000\r\nMessage-ID: <m1@sender.test>\r\n{extra}\r\n{body}").encode()
