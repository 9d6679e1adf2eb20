"""Dovetail serves what Postfix's virtual(8) delivered: the same Maildir, written by a real Postfix."""

from __future__ import annotations

import os
import smtplib
from pathlib import Path

from imapclient import IMAPClient

from ..interop_postfix import PostfixInstance
from .harness import Master, wait_for


def test_imap_serves_mail_that_postfix_virtual_delivered(tmp_path: Path) -> None:
    m = Master.create(tmp_path)
    base = m.data_dir / "mail" / "acme"
    box = base / "acme.example" / "bob"
    # Postfix's virtual(8) writes straight into the mailbox Dovetail serves, as the service user
    user = "dovetail" if os.geteuid() == 0 else os.environ.get("USER", "nobody")
    postfix = PostfixInstance(base, {"bob@acme.example": "acme.example/bob/"}, user)
    postfix.start()
    try:
        with smtplib.SMTP("127.0.0.1", postfix.port, timeout=30) as s:
            for i in range(3):
                s.sendmail("alice@ext.example", ["bob@acme.example"],
                           f"From: alice@ext.example\r\nSubject: via postfix {i}\r\n\r\nbody {i}\r\n")
        wait_for(lambda: len(list((box / "new").glob("*"))) == 3 if (box / "new").exists() else False, 60,
                 "Postfix deliveries")
    finally:
        postfix.stop()
    assert not (box / "dovecot-uidlist").exists()  # written by Postfix only, never indexed yet
    m.start()
    try:
        with IMAPClient("127.0.0.1", port=m.imap_port, ssl=False, timeout=30) as client:
            client.login("bob@acme.example", "secret")
            assert client.select_folder("INBOX")[b"EXISTS"] == 3
            uids = client.search("ALL")
            data = client.fetch(uids, ["ENVELOPE", "BODY[TEXT]", "RFC822.SIZE"])
            subjects = sorted(d[b"ENVELOPE"].subject.decode() for d in data.values())
            assert subjects == ["via postfix 0", "via postfix 1", "via postfix 2"]
            assert {d[b"BODY[TEXT]"] for d in data.values()} == {b"body 0\r\n", b"body 1\r\n", b"body 2\r\n"}
            client.add_flags(uids[:1], [b"\\Seen"])
        assert (box / "dovecot-uidlist").exists()
        assert any(p.name.endswith(":2,S") for p in (box / "cur").iterdir())
    finally:
        m.stop()
        m.cleanup()
