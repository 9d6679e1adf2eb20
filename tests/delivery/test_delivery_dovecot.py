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
    on_disk = sorted((box / "new").iterdir(), key=lambda p: p.name)
    assert len(on_disk) == 2
    written = [(p.name, p.read_bytes()) for p in on_disk]

    imap = dovecot.imap("bob@example.com")
    try:
        typ, data = imap.select("INBOX")
        assert typ == "OK" and data == [b"2"], dovecot.log()
        for seq, (name, raw) in enumerate(written, start=1):
            typ, fetched = imap.fetch(str(seq), "(RFC822.SIZE BODY.PEEK[])")
            assert typ == "OK"
            meta, content = fetched[0]
            expected = raw.replace(b"\n", b"\r\n")
            assert content == expected
            size = int(re.search(rb"RFC822\.SIZE (\d+)", meta).group(1))
            assert size == len(expected) == int(re.search(r",W=(\d+)", name).group(1))
            assert b"Delivered-To: bob@example.com\r\n" in content
            assert content.startswith(b"Return-Path: <alice@example.org>\r\n")
        typ, found = imap.search(None, "SUBJECT", "second")
        assert found == [b"2"]
        # Dovecot took the files over from new/ to cur/, keeping our base names and sizes.
        assert sorted(p.name.split(":")[0] for p in (box / "cur").iterdir()) == [n for n, _ in written]
    finally:
        imap.logout()
    assert "Error" not in dovecot.log()
