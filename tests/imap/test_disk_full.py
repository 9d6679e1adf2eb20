"""A full disk is not an outage: on a real full file system (a small tmpfs), a real imapd still
selects, fetches, searches, stores flags (renaming the Maildir files) and expunges, with the index
kept in memory, and refuses APPEND and COPY with ``NO [OVERQUOTA]``, never ``[SERVERBUG]``."""

from __future__ import annotations

import imaplib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from dovetail.imap.limits import Limits
from dovetail.imap.server import ImapServer
from dovetail.mailauth.accounts import DictAuthenticator
from tests.fulldisk import fill, small_tmpfs
from tests.imap.imap_testkit import ServerThread

PASSWORD = "wonderland"


@pytest.fixture(scope="module")
def disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with small_tmpfs(tmp_path_factory.mktemp("full") / "mnt") as where:
        yield where


@pytest.fixture(scope="module")
def server(disk: Path) -> Iterator[ServerThread]:
    auth = DictAuthenticator({"alice": PASSWORD}, disk / "mail")
    st = ServerThread(ImapServer(auth, limits=Limits(auth_fail_base_delay=0.01)))
    try:
        yield st
    finally:
        st.stop()


def _client(server: ServerThread) -> imaplib.IMAP4:
    c = imaplib.IMAP4("127.0.0.1", server.port)
    c.login("alice", PASSWORD)
    return c


def _files(folder: Path) -> list[str]:
    return sorted(os.listdir(folder / "cur")) + sorted(os.listdir(folder / "new"))


def test_mailbox_keeps_working_on_a_full_disk(disk: Path, server: ServerThread) -> None:
    c = _client(server)
    for i in range(5):
        assert c.append("INBOX", None, None, f"Subject: note {i}\r\n\r\nbody number {i}\r\n".encode())[0] == "OK"
    assert c.create("Archive")[0] == "OK"
    c.logout()  # the index's last connection closes: its WAL and shared-memory files go
    inbox = disk / "mail" / "alice"
    # A message another writer left in new/ just before the disk filled (its uidlist line still fits).
    (inbox / "new" / "1700000000.late.host").write_bytes(b"Subject: late\n\nlate body\n")
    filler = fill(disk)
    try:
        c = _client(server)
        typ, data = c.select("INBOX")
        assert typ == "OK", data
        assert data == [b"6"]
        typ, data = c.fetch("1:*", "(FLAGS ENVELOPE)")
        assert typ == "OK" and len(data) == 6 and b"note 4" in data[4] and b"late" in data[5]
        typ, data = c.search(None, "TEXT", '"body number 3"')
        assert (typ, data) == ("OK", [b"4"])
        typ, data = c.store("2", "+FLAGS", "(\\Seen)")
        assert typ == "OK" and b"\\Seen" in data[0]
        assert sum(name.endswith(":2,S") for name in _files(inbox)) == 1  # the Maildir is the truth
        assert c.store("1", "+FLAGS", "(\\Deleted)")[0] == "OK"
        before = _files(inbox)
        typ, data = c.expunge()
        assert (typ, data) == ("OK", [b"1"])
        assert len(_files(inbox)) == len(before) - 1
        typ, data = c.fetch("1", "(FLAGS)")
        assert typ == "OK" and b"\\Seen" in data[0]

        typ, data = c.append("INBOX", None, None, b"Subject: more\r\n\r\nno room\r\n")
        assert typ == "NO" and data[0].startswith(b"[OVERQUOTA]"), data
        typ, data = c.copy("1:2", "Archive")
        assert typ == "NO" and data[0].startswith(b"[OVERQUOTA]"), data
        assert _files(disk / "mail" / "alice" / ".Archive") == []
        assert os.listdir(inbox / "tmp") == []

        other = _client(server)  # a second session reads the same state (EXAMINE takes nothing)
        typ, data = other.select("INBOX", readonly=True)
        assert (typ, data) == ("OK", [b"5"])
        other.logout()
    finally:
        filler.unlink()
    # Room again: mail is stored as before.
    typ, data = c.noop()
    assert typ == "OK"
    assert c.select("INBOX")[1] == [b"5"]
    assert c.append("INBOX", None, None, b"Subject: again\r\n\r\nroom\r\n")[0] == "OK"
    assert c.search(None, "SUBJECT", "again")[1] == [b"6"]
    c.logout()
