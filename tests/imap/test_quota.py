"""QUOTA (RFC 9208) against a real ``dovetail serve``: the directory's mailbox quota is the IMAP quota
root, and APPEND and COPY over it answer NO [OVERQUOTA] and store nothing."""

from __future__ import annotations

import imaplib
import re

from tests.master.harness import Master, cli


def test_quota_root_and_overquota(tmp_path) -> None:
    master = Master.create(tmp_path)
    out = cli(master.data_dir, "mailbox", "add", "carol@acme.example", "--password", "pw", "--quota", "20K")
    assert out.returncode == 0, out.stderr
    master.start()
    try:
        imap = imaplib.IMAP4("127.0.0.1", master.imap_port)
        imap.login("carol@acme.example", "pw")
        assert b"QUOTA" in imap.capability()[1][0].split()
        typ, data = imap.getquotaroot("INBOX")
        assert typ == "OK"
        assert data[0][0] == b'INBOX "User quota"'
        assert data[1][0] == b'"User quota" (STORAGE 0 20)'

        msg = b"From: a@example.org\r\nSubject: x\r\n\r\n" + b"y" * 8000 + b"\r\n"
        assert imap.append("INBOX", None, None, msg)[0] == "OK"
        typ, data = imap.getquota('"User quota"')
        assert typ == "OK" and re.match(rb'"User quota" \(STORAGE 8 20\)', data[0])
        assert imap.append("INBOX", None, None, msg)[0] == "OK"
        typ, data = imap.append("INBOX", None, None, msg)
        assert typ == "NO" and b"[OVERQUOTA]" in data[0]
        imap.select("INBOX")
        typ, data = imap.copy("1:2", "Archive")
        assert typ == "NO" and b"[OVERQUOTA]" in data[0]
        assert imap.status("Archive", "(MESSAGES)")[1][0].endswith(b"(MESSAGES 0)")
        assert imap.select("INBOX")[1][0] == b"2"
        typ, data = imap._simple_command("SETQUOTA", '"User quota"', "(STORAGE 100)")
        assert typ == "NO"
        imap.logout()

        # No limit, no quota root.
        imap = imaplib.IMAP4("127.0.0.1", master.imap_port)
        imap.login("bob@acme.example", "secret")
        typ, data = imap.getquotaroot("INBOX")
        assert typ == "OK" and data[0] == [b"INBOX"] and data[1] == [None]
        imap.logout()
    finally:
        master.stop()
        master.cleanup()
