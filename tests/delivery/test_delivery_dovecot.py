"""Dovecot reads what the Maildir agent writes: listing, sizes and bytes."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from tests.interop_dovecot import DovecotInstance, dovecot  # noqa: F401
from tests.queue.helpers_queue import envelope, message

from dovetail.delivery import MailboxTarget, MaildirDeliveryAgent
from dovetail.queue import Queue, QueuedMessage

pytestmark = pytest.mark.interop


def test_dovecot_lists_and_fetches_delivered_mail_byte_exact(dovecot: DovecotInstance, tmp_path: Path) -> None:  # noqa: F811
    box = dovecot.add_user("bob@example.com", "pw1")
    q = Queue(tmp_path / "queue")
    bodies = [message("first", "One.\r\n"), message("second", "Two\r\nlines\r\n" + "x" * 5000 + "\r\n")]
    agent = MaildirDeliveryAgent(lambda a: [MailboxTarget(a, box)])
    for data in bodies:
        qid = q.inject(envelope(rcpts=("bob@example.com",)), data)
        with QueuedMessage(qid, q.path("incoming", qid)) as msg:
            (res,) = asyncio.run(agent.deliver(msg, msg.envelope.recipients))
            assert res.status == "sent"
    dovecot.hand_over()
    on_disk = list((box / "new").iterdir())
    assert len(on_disk) == 2
    # Which file Dovecot numbers first is Dovecot's business (both arrived within the same second):
    # each message it serves must be one of the files, byte for byte, and each file served once.
    written = {p.read_bytes().replace(b"\n", b"\r\n"): p.name for p in on_disk}

    imap = dovecot.imap("bob@example.com")
    try:
        typ, data = imap.select("INBOX")
        assert typ == "OK" and data == [b"2"], dovecot.log()
        served: dict[bytes, int] = {}
        for seq in (1, 2):
            typ, fetched = imap.fetch(str(seq), "(RFC822.SIZE BODY.PEEK[])")
            assert typ == "OK"
            meta, content = fetched[0]
            assert content in written and content not in served
            served[content] = seq
            size = int(re.search(rb"RFC822\.SIZE (\d+)", meta).group(1))
            assert size == len(content) == int(re.search(r",W=(\d+)", written[content]).group(1))
            assert b"Delivered-To: bob@example.com\r\n" in content
            assert content.startswith(b"Return-Path: <alice@example.org>\r\n")
        typ, found = imap.search(None, "SUBJECT", "second")
        assert found == [str(next(seq for c, seq in served.items() if b"Subject: second" in c)).encode()]
        # Dovecot took the files over from new/ to cur/, keeping our base names and sizes.
        assert sorted(p.name.split(":")[0] for p in (box / "cur").iterdir()) == sorted(written.values())
    finally:
        imap.logout()
    assert "Error" not in dovecot.log()
