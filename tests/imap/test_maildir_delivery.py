"""Against the Maildir storage: IDLE sees a message that a delivery agent drops into new/."""

from __future__ import annotations

import os
import socket
import time

from tests.imap.imap_testkit import needs_storage
from tests.imap.test_commands import MSG, raw_login
from tests.imap.test_idle_condstore import wait_for

pytestmark = needs_storage


def deliver(maildir, data: bytes) -> None:
    """What a delivery agent does: write in tmp/, then rename into new/."""
    name = f"{time.time():.6f}.P{os.getpid()}.{socket.gethostname()}"
    (maildir / "tmp").mkdir(parents=True, exist_ok=True)
    (maildir / "new").mkdir(parents=True, exist_ok=True)
    tmp = maildir / "tmp" / name
    tmp.write_bytes(data)
    os.rename(tmp, maildir / "new" / name)


def test_idle_sees_delivery_into_new(make_server, tmp_path):
    srv = make_server()
    a = raw_login(srv)
    assert a.cmd(b"s SELECT INBOX")[-1].startswith(b"s OK")
    a.send(b"i IDLE\r\n")
    assert a.readline() == b"+ idling"
    t0 = time.monotonic()
    deliver(tmp_path / "mail" / "alice", MSG)
    wait_for(a, rb"^\* 1 EXISTS$", timeout=1.0)
    assert time.monotonic() - t0 < 1.0
    a.send(b"DONE\r\n")
    assert a.read_until_tagged(b"i")[-1].startswith(b"i OK")
    lines = a.cmd(b"f FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert b"hello there" in b"".join(lines)
    a.close()
