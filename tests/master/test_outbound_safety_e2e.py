"""Outbound that never fails silently, through a real master: suppressed recipients are refused or dropped
at submission as the tenant chose, and a message of a signing domain that cannot be signed is bounced.

Run as root, the workers drop to ``dovetail`` as operators run them; the CLI runs as root beside them.
"""

from __future__ import annotations

import json
import os
import re
import smtplib
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from dovetail import config
from dovetail.db import make_engine
from dovetail.replies.service import RepliesService

from .harness import Master, RelaySink, cli, free_port, relay_everything_to, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="privileges are dropped only when started as root")



@pytest.fixture
def master(tmp_path: Path, sink: tuple[RelaySink, int]) -> Iterator[Master]:
    m = Master.create(tmp_path)
    relay_everything_to(m, sink[1])
    m.submission_port = free_port()
    m.start("--submission", f"127.0.0.1:{m.submission_port}")
    yield m
    m.stop()
    m.cleanup()


def ok(data_dir: Path, *args: str) -> str:
    out = cli(data_dir, *args)
    assert out.returncode == 0, out.stderr
    return out.stdout


def submit(master: Master, recipients: list[str], message: bytes) -> dict[str, tuple[int, bytes]]:
    """Bob sends over STARTTLS with AUTH; the recipients refused, as smtplib reports them."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.1", master.submission_port, timeout=30) as s:
        s.starttls(context=ctx)
        s.login("bob@acme.example", "secret")
        return s.sendmail("bob@acme.example", recipients, message)


def message(subject: str) -> bytes:
    return (f"From: Bob <bob@acme.example>\r\nTo: customers@remote.example\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject}@acme.example>\r\n\r\nhello\r\n").encode()


def test_suppressed_recipients_are_refused_or_dropped_as_the_tenant_chose(master: Master,
                                                                         sink: tuple[RelaySink, int]) -> None:
    handler, _ = sink
    engine = make_engine(config.load(master.data_dir).database_url)
    RepliesService.open(engine, master.data_dir).queries.suppress("acme", "gone@remote.example", "hard_bounce")
    engine.dispose()
    assert "suppressed recipients: reject" in ok(master.data_dir, "tenant", "show", "acme")

    refused = submit(master, ["keep@remote.example", "gone@remote.example"], message("first"))
    assert refused == {"gone@remote.example": (550, b"5.7.1 <gone@remote.example>: recipient is on the "
                                                     b"suppression list (hard_bounce)")}
    wait_for(lambda: len(handler.messages) == 1, 30, "first relayed message")
    assert handler.messages[0][1] == ["keep@remote.example"]

    bad = cli(master.data_dir, "tenant", "set", "acme", "--suppressed-recipients", "bounce")
    assert bad.returncode == 2 and "not one of reject, drop" in bad.stderr and len(bad.stderr.splitlines()) == 1
    ok(master.data_dir, "tenant", "set", "acme", "--suppressed-recipients", "drop")
    listed = json.loads(ok(master.data_dir, "tenant", "list", "--json"))
    assert [(t["name"], t["suppressed_recipients"]) for t in listed] == [("acme", "drop")]

    assert submit(master, ["keep2@remote.example", "gone@remote.example"], message("second")) == {}
    wait_for(lambda: len(handler.messages) == 2, 30, "second relayed message")
    sender, rcpts, data = handler.messages[1]
    assert (sender, rcpts) == ("bob@acme.example", ["keep2@remote.example"]) and b"Subject: second" in data
    assert "dropped 1 recipient(s) on the suppression list: <gone@remote.example> (hard_bounce)" in master.log()

    assert submit(master, ["gone@remote.example"], message("third")) == {}
    line = wait_for(lambda: re.search(r"([0-9A-Z]{16}): discarded: from=<bob@acme\.example>, all 1 recipient\(s\) "
                                      r"on the suppression list", master.log()), 30, "discard line")
    assert "Mail queue is empty" in ok(master.data_dir, "queue", "list")  # nothing queued for it
    assert line.group(1) not in ok(master.data_dir, "queue", "list")
    assert [m[1] for m in handler.messages] == [["keep@remote.example"], ["keep2@remote.example"]]


def test_a_message_that_cannot_be_signed_is_bounced_not_sent_unsigned(master: Master,
                                                                     sink: tuple[RelaySink, int]) -> None:
    """A header line that is no header field: no From: can be read, so no signature can be made; acme.example
    signs (keys made by root, used by the dropped workers), so the mail goes back to Bob with 5.6.0."""
    handler, _ = sink
    broken = (b"From: Bob <bob@acme.example>\r\nthis line is no header field\r\nSubject: broken\r\n\r\n"
              b"hello\r\n")
    assert submit(master, ["someone@remote.example"], broken) == {}
    line = wait_for(lambda: re.search(r"to=<someone@remote\.example>, relay=none, .*dsn=5\.6\.0, status=bounced "
                                      r"\(message has no readable From: header, so it cannot be DKIM-signed for "
                                      r"acme\.example\)", master.log()), 60, "bounce line")
    assert line is not None
    dsn = wait_for(lambda: [p.read_bytes() for p in master.maildir_files("bob")], 30, "bounce in Bob's mailbox")
    assert b"Status: 5.6.0" in dsn[0] and b"cannot be DKIM-signed for acme.example" in dsn[0]
    assert handler.messages == []  # bounced, never relayed unsigned

    # the same sender with a sound message still leaves, signed
    assert submit(master, ["someone@remote.example"], message("sound")) == {}
    wait_for(lambda: handler.messages, 30, "relayed message")
    assert handler.messages[0][2].count(b"DKIM-Signature:") == 2
