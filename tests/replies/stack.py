"""Dovetail in one process for end-to-end tests and the latency benchmark.

The MX (SMTP engine + queue intake), the queue manager with Maildir delivery, the IMAP server and
the replies engine following a reply inbox over IMAP, all on 127.0.0.1 in one event-loop thread,
wired the way the master's runners wire them.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from sqlalchemy.engine import Engine

from dovetail.delivery.agent import MaildirDeliveryAgent
from dovetail.directory import Directory, Resolver
from dovetail.imap.server import ImapServer
from dovetail.intake.local import mailbox_targets
from dovetail.intake.mx import MxBackend
from dovetail.mailauth.login import DirectoryAuthenticator
from dovetail.mailauth.passwords import hash_password
from dovetail.queue import Queue
from dovetail.queue.manager import QueueConfig, QueueManager
from dovetail.replies.runner import RepliesEngine
from dovetail.replies.sources.imap import ImapAccounts
from dovetail.smtp.server import SmtpServer

INBOX = "replies@acme.example"
PASSWORD = "inbox secret"


def allow_local_webhooks(data_dir: Path) -> None:
    """The test receivers listen on 127.0.0.1, which the SSRF guard refuses unless configured."""
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "dovetail.toml").write_text("[replies]\nwebhook_allow_private = true\n")


class Stack:
    def __init__(self, root: Path, engine: Engine, *, tenant: str = "acme") -> None:
        self.root = root
        self.engine = engine
        self.directory = Directory(engine)
        if not any(t["name"] == tenant for t in self.directory.tenant_list()):
            self.directory.tenant_add(tenant)
        self.directory.domain_add("acme.example", tenant)
        self.directory.mailbox_add(INBOX, hash_password(PASSWORD))
        self.mail_root = root / "mail"
        self.mail_root.mkdir(parents=True, exist_ok=True)
        self.queue = Queue(root / "queue")
        self.resolver = Resolver(self.directory, self.mail_root, check_interval=0)
        allow_local_webhooks(root / "data")
        self.replies = RepliesEngine(engine, root / "data", account_refresh=0.2)
        self.service = self.replies.service
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.smtp_port = 0
        self.imap_port = 0

    def start(self) -> Stack:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)
        ImapAccounts(self.engine).add("acme", "reply inbox", host="127.0.0.1", port=self.imap_port, tls="none",
                                      username=INBOX, password=PASSWORD)
        return self

    async def _start(self) -> None:
        self.smtp = SmtpServer(MxBackend(self.resolver, self.queue), hostname="mx.acme.example")
        await self.smtp.start(host="127.0.0.1", port=0)
        self.smtp_port = self.smtp._port
        self.imap = ImapServer(DirectoryAuthenticator(self.directory, self.mail_root),
                               trusted_networks=["127.0.0.0/8"])
        self.imap_port = await self.imap.start(host="127.0.0.1", port=0)
        agent = MaildirDeliveryAgent(mailbox_targets(self.resolver))
        self.qmgr = QueueManager(self.queue, {"virtual": agent}, QueueConfig(hostname="mx.acme.example"),
                                 transport_for=lambda _address: "virtual")
        self.qmgr_task = asyncio.create_task(self.qmgr.run())
        self.stop_replies = asyncio.Event()
        self.replies_task = asyncio.create_task(self.replies.run(self.stop_replies))

    def crash_replies(self) -> None:
        """Cancel the replies engine wherever it is (no graceful stop), as a killed process would stop."""
        async def _crash() -> None:
            self.replies_task.cancel()
            await asyncio.gather(self.replies_task, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(_crash(), self.loop).result(30)

    def start_replies(self) -> None:
        """A fresh replies engine on the same database, as after a restart."""
        async def _start() -> None:
            self.replies = RepliesEngine(self.engine, self.root / "data", account_refresh=0.2)
            self.service = self.replies.service
            self.stop_replies = asyncio.Event()
            self.replies_task = asyncio.create_task(self.replies.run(self.stop_replies))

        asyncio.run_coroutine_threadsafe(_start(), self.loop).result(30)

    def stop(self) -> None:
        async def _stop() -> None:
            self.stop_replies.set()
            await asyncio.wait_for(self.replies_task, 15)
            self.qmgr.stop()
            await asyncio.wait_for(self.qmgr_task, 15)
            await self.smtp.stop(1.0)
            await self.imap.stop(1.0)

        asyncio.run_coroutine_threadsafe(_stop(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
