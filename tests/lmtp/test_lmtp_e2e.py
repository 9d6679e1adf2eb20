"""LMTP between real ``dovetail serve`` instances, and from a real Postfix: two data directories, two masters.

Instance A is an MX node whose transport rule hands ``acme.example`` to instance B's lmtpd; B keeps the
Maildirs. Both directories know the domain and the mailbox (one shared directory, later). Postfix with
``virtual_transport = lmtp:inet:...`` delivers into B as it would into Dovecot.
"""

from __future__ import annotations

import os
import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest
from imapclient import IMAPClient

from ..interop_postfix import PostfixInstance
from ..master.harness import Master, cli, free_port, wait_for


def _mail(subject: str) -> str:
    return f"From: alice@ext.example\r\nTo: bob@acme.example\r\nSubject: {subject}\r\n\r\nbody of {subject}\r\n"


def _subjects(m: Master) -> list[str]:
    out = []
    for path in m.maildir_files():
        for line in path.read_bytes().splitlines():
            if line.startswith(b"Subject: "):
                out.append(line[9:].decode())
                break
    return sorted(out)


def _queued(m: Master) -> list[Path]:
    root = m.data_dir / "queue"
    return [p for state in ("incoming", "active", "deferred") for p in (root / state).glob("*")]


@pytest.fixture
def mailbox_node(tmp_path: Path) -> Iterator[tuple[Master, int]]:
    (tmp_path / "b").mkdir()
    b = Master.create(tmp_path / "b")
    port = free_port()
    b.start("--lmtp", f"127.0.0.1:{port}")
    try:
        yield b, port
    finally:
        b.stop()
        b.cleanup()


@pytest.mark.timeout(600)  # two whole servers, one of them started twice, and a CLI process per look
def test_mx_node_delivers_over_lmtp_and_holds_mail_while_the_mailbox_node_is_down(
        tmp_path: Path, mailbox_node: tuple[Master, int]) -> None:
    b, port = mailbox_node
    (tmp_path / "a").mkdir()
    a = Master.create(tmp_path / "a")
    out = cli(a.data_dir, "transport", "set", "recipient", "acme.example", "--lmtp", f"lmtp:127.0.0.1:{port}")
    assert out.returncode == 0, out.stderr
    assert f"lmtp:127.0.0.1:{port}" in out.stdout
    resolved = cli(a.data_dir, "transport", "resolve", "alice@ext.example", "bob@acme.example")
    assert f"transport: lmtp:127.0.0.1:{port}" in resolved.stdout, resolved.stdout
    a.start()
    try:
        with a.smtp() as s:
            s.sendmail("alice@ext.example", ["bob@acme.example"], _mail("first"))
        wait_for(lambda: _subjects(b) == ["first"], 60, "delivery over LMTP to node B")
        assert a.maildir_files() == []  # A keeps no copy: bob's mailbox lives on B
        # qmgr logs the outcome once the LMTP reply is in, which may be just after the file appears
        wait_for(lambda: "relay=lmtp:127.0.0.1" in a.log() and "status=sent" in a.log(), 30, "the LMTP outcome logged")

        b.stop()  # the mailbox node goes away; A accepts and queues as usual
        with a.smtp() as s:
            s.sendmail("alice@ext.example", ["bob@acme.example"], _mail("second"))
            s.sendmail("alice@ext.example", ["bob@acme.example"], _mail("third"))
        wait_for(lambda: len(list((a.data_dir / "queue" / "deferred").glob("*"))) == 2, 60, "deferred on A")
        assert "dsn=4.4.1" in a.log()
        b.start("--lmtp", f"127.0.0.1:{port}")
        assert cli(a.data_dir, "queue", "flush").returncode == 0
        wait_for(lambda: _subjects(b) == ["first", "second", "third"], 90, "held mail delivered to B")
        wait_for(lambda: not _queued(a), 30, "A's queue empty")
        assert _subjects(b) == ["first", "second", "third"]  # nothing lost, nothing twice
        with IMAPClient("127.0.0.1", port=b.imap_port, ssl=False, timeout=30) as client:
            client.login("bob@acme.example", "secret")
            assert client.select_folder("INBOX")[b"EXISTS"] == 3
    finally:
        a.stop()
        a.cleanup()


LMTP_SERVICE = "lmtp       unix  -       -       n       -       -       lmtp\n"


@pytest.mark.timeout(300)  # a whole server and a private Postfix
def test_postfix_virtual_transport_lmtp_delivers_into_dovetail(mailbox_node: tuple[Master, int]) -> None:
    b, port = mailbox_node
    user = "dovetail" if os.geteuid() == 0 else os.environ.get("USER", "nobody")
    postfix = PostfixInstance(b.data_dir / "mail", {"bob@acme.example": "unused/", "nobody@acme.example": "unused/"},
                              user)
    etc = postfix.root / "etc"
    with open(etc / "main.cf", "a") as main:
        main.write(f"virtual_transport = lmtp:inet:127.0.0.1:{port}\n")
    with open(etc / "master.cf", "a") as master:
        master.write(LMTP_SERVICE)
    postfix.start()
    try:
        with smtplib.SMTP("127.0.0.1", postfix.port, timeout=30) as s:
            s.sendmail("alice@ext.example", ["bob@acme.example"], _mail("via postfix"))
            # Postfix knows nobody@ (its map says so) but Dovetail does not: LMTP's 550 makes Postfix bounce it
            s.sendmail("alice@ext.example", ["nobody@acme.example"], _mail("to nobody"))
        wait_for(lambda: _subjects(b) == ["via postfix"], 60, "Postfix delivery over LMTP")
        maillog = postfix.root / "maillog"
        # Postfix logs through postlogd, after the fact: wait for both outcomes to be written
        wait_for(lambda: all(s in maillog.read_text(errors="replace") for s in ("status=sent", "status=bounced")),
                 60, "Postfix's log of the delivery and the bounce")
        log = maillog.read_text(errors="replace")
        assert "relay=127.0.0.1[127.0.0.1]:" in log and "status=sent (250 2.0.0 <bob@acme.example> Saved)" in log
        assert "550 5.1.1 <nobody@acme.example>: no mailbox here" in log
        (stored,) = b.maildir_files()
        text = stored.read_bytes()
        assert b"Delivered-To: bob@acme.example" in text and b"with LMTP id" in text
        with IMAPClient("127.0.0.1", port=b.imap_port, ssl=False, timeout=30) as client:
            client.login("bob@acme.example", "secret")
            client.select_folder("INBOX")
            (uid,) = client.search("ALL")
            assert client.fetch([uid], ["ENVELOPE"])[uid][b"ENVELOPE"].subject == b"via postfix"
    finally:
        postfix.stop()
