"""Direct delivery at the MX (``mx.direct_delivery``): an all-local message is committed into its Maildirs
before ``250`` with the same bytes, folders and replies hand-over as a queued one; whatever needs the
queue still gets it."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from pathlib import Path

import aiosmtplib
import pytest

from dovetail.delivery.agent import MaildirConfig, MaildirDeliveryAgent
from dovetail.intake.contentfilter import ContentFilter, Thresholds
from dovetail.intake.direct import DirectDelivery
from dovetail.intake.local import mailbox_targets
from dovetail.intake.mx import MxBackend
from dovetail.intake.rspamd import RspamdClient
from dovetail.intake.senderauth import SenderAuth
from dovetail.mailauth.dns import Resolver as DnsResolver
from dovetail.master.runners import RepliesHandOver
from dovetail.replies.handover import Delivered
from dovetail.smtp.server import SmtpServer
from tests.dnsserver import LoopbackDNS
from tests.rspamd_server import RspamdServer

from .mxstack import OUR_ID, Mx, make_mx, message

pytestmark = pytest.mark.timeout(400)  # the first test to use rspamd waits for its start (rule compilation)


@dataclass
class Recorded:
    """A replies hand-over that takes every mailbox and remembers what it was handed."""

    items: list[Delivered] = field(default_factory=list)

    def wants(self, item: Delivered) -> bool:
        return True

    async def __call__(self, items: list[Delivered]) -> None:
        self.items.extend(items)


def _direct(mx: Mx, hand_over: Recorded) -> DirectDelivery:
    agent = MaildirDeliveryAgent(mailbox_targets(mx.resolver), MaildirConfig())
    return DirectDelivery(RepliesHandOver(agent, mx.resolver, hand_over))


def _normal(raw: bytes) -> bytes:
    """A stored copy without what differs between two deliveries of one message: queue id and date."""
    return re.sub(rb"(with ESMTP id )[0-9A-Za-z]+((?:\s+for <[^>]+>)?;\s+)[^\n]+", rb"\1QID\2DATE", raw)


def _filter(rspamd: RspamdServer, thresholds: Thresholds | None = None) -> ContentFilter:
    async def lookup(rcpt: str) -> Thresholds | None:
        return thresholds
    return ContentFilter(OUR_ID, OUR_ID, rspamd=RspamdClient(rspamd.url, 10), thresholds=lookup)


@pytest.mark.parametrize("folder", ["INBOX", "Junk"])
def test_a_direct_copy_is_the_queued_copy_byte_for_byte(tmp_path: Path, rspamd: RspamdServer,
                                                        session_dns: LoopbackDNS, folder: str) -> None:
    auth = SenderAuth(DnsResolver([session_dns.nameserver], timeout=2), OUR_ID)
    cf = _filter(rspamd, Thresholds(add_header=-100) if folder == "Junk" else None)  # -100: all is spam
    forged = f"Authentication-Results: {OUR_ID}; spf=pass\r\nX-Spam-Flag: NO\r\n"
    msg = message(body="Thanks for the call yesterday, see you Monday.\r\n", extra=forged)
    rcpts = ("bob@acme.example", "carol@acme.example")

    (tmp_path / "queued").mkdir()
    (tmp_path / "direct").mkdir()
    queued = make_mx(tmp_path / "queued", auth)
    assert queued.send(msg, cf, rcpts=rcpts)[0] == 250
    (qmsg,) = queued.queued()
    via_queue = Recorded()  # the queue manager's local agent, as the qmgr process builds it
    results = asyncio.run(_direct(queued, via_queue).agent.deliver(qmsg, qmsg.envelope.pending()))
    assert [r.status for r in results] == ["sent", "sent"]

    direct = make_mx(tmp_path / "direct", auth)
    at_intake = Recorded()
    direct.direct = _direct(direct, at_intake)
    code, text = direct.send(msg, cf, rcpts=rcpts)
    assert code == 250 and "queued as" in text
    assert direct.queued() == [] and direct.queue.ids("tmp") == []  # no queue file, not even a tmp one

    for rcpt in rcpts:
        (a,) = queued.folder(rcpt, folder)
        (b,) = direct.folder(rcpt, folder)
        assert _normal(a) == _normal(b)
        assert b.startswith(f"Return-Path: <alice@sender.test>\nDelivered-To: {rcpt}\n".encode())
        assert b"X-Spam-Status:" in b and b"rspamd score=" in b and b"spf=" in b  # both filters ran
    assert [(i.mailbox, i.folder) for i in via_queue.items] == [(i.mailbox, i.folder) for i in at_intake.items]
    assert [i.folder for i in at_intake.items] == [folder, folder] and all(i.key for i in at_intake.items)


def test_a_recipient_the_direct_attempt_cannot_take_is_queued_before_250(tmp_path: Path) -> None:
    """carol's quota has room at RCPT but not for the message: bob's copy is delivered at intake, carol is
    queued with bob recorded as sent, and the queue then defers her as it would have (4.2.2)."""
    mx = make_mx(tmp_path)
    mx.directory.mailbox_add("dave@acme.example", None, quota_bytes=300)
    recorded = Recorded()
    mx.direct = _direct(mx, recorded)
    code, text = mx.send(message(body="x" * 400 + "\r\n"), None, rcpts=("bob@acme.example", "dave@acme.example"))
    assert code == 250
    qid = re.search(r"queued as (\w+)", text).group(1)
    (queued,) = mx.queued()
    assert queued.queue_id == qid
    bob, dave = queued.envelope.recipients
    assert (bob.status, bob.relay, bob.reason) == ("sent", "virtual", "delivered to maildir")
    assert queued.envelope.pending() == [dave]
    assert len(mx.folder("bob@acme.example")) == 1 and [i.mailbox for i in recorded.items] == ["bob@acme.example"]
    results = asyncio.run(mx.direct.agent.deliver(queued, queued.envelope.pending()))
    assert [(r.status, r.dsn_code) for r in results] == [("deferred", "4.2.2")]
    assert len(mx.folder("bob@acme.example")) == 1  # the queue never delivers bob again


@pytest.mark.parametrize("case", ["forwarding alias", "success DSN", "direct delivery off"])
def test_what_needs_the_queue_still_goes_there(tmp_path: Path, case: str) -> None:
    mx = make_mx(tmp_path)
    mx.directory.alias_add("team@acme.example", ["bob@acme.example", "someone@elsewhere.example"])
    if case != "direct delivery off":
        mx.direct = _direct(mx, Recorded())
    rcpt = "team@acme.example" if case == "forwarding alias" else "bob@acme.example"

    async def send() -> int:
        server = SmtpServer(MxBackend(mx.resolver, mx.queue, direct=mx.direct), hostname=OUR_ID)
        await server.start(host="127.0.0.1", port=0)
        try:
            async with aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port) as client:
                await client.mail("alice@sender.test")
                options = ["NOTIFY=SUCCESS,FAILURE"] if case == "success DSN" else []
                await client.rcpt(rcpt, options=options)
                return (await client.data(message())).code
        finally:
            await server.stop(1)

    assert asyncio.run(send()) == 250
    assert len(mx.queued()) == 1 and mx.folder("bob@acme.example") == []
