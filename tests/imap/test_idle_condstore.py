"""IDLE, CONDSTORE and QRESYNC over real sockets."""

from __future__ import annotations

import re
import time

from tests.imap.imap_testkit import RawClient
from tests.imap.test_commands import MSG, raw_login


def append(c: RawClient, box: bytes = b"INBOX", data: bytes = MSG) -> bytes:
    return c.cmd(b"ap APPEND " + box + b" {%d+}\r\n" % len(data) + data)[-1]


def wait_for(c: RawClient, pattern: bytes, timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"no {pattern!r} within {timeout}s"
        line = c.readline(timeout=left)
        if re.search(pattern, line):
            return line


def test_idle_sees_other_sessions_append_within_a_second(mail_server):
    a = raw_login(mail_server)
    b = raw_login(mail_server)
    a.cmd(b"s SELECT INBOX")
    a.send(b"i IDLE\r\n")
    assert a.readline() == b"+ idling"
    t0 = time.monotonic()
    assert append(b).startswith(b"ap OK")
    wait_for(a, rb"^\* 1 EXISTS$", timeout=1.0)
    assert time.monotonic() - t0 < 1.0
    b.cmd(b"s SELECT INBOX")
    b.cmd(b"f STORE 1 +FLAGS (\\Flagged)")
    wait_for(a, rb"^\* 1 FETCH \(.*\\Flagged", timeout=1.0)
    a.send(b"DONE\r\n")
    assert a.read_until_tagged(b"i")[-1] == b"i OK Idle completed."
    # after IDLE the connection takes commands again
    assert a.cmd(b"n NOOP")[-1].startswith(b"n OK")
    a.close()
    b.close()


def test_idle_without_done_is_bad(mail_server):
    a = raw_login(mail_server)
    a.send(b"i IDLE\r\n")
    assert a.readline() == b"+ idling"
    a.send(b"NOOP\r\n")
    assert a.readline().startswith(b"i BAD")
    assert a.cmd(b"n NOOP")[-1].startswith(b"n OK")
    a.close()


def test_condstore_store_unchangedsince_and_fetch_changedsince(mail_server):
    c = raw_login(mail_server)
    for _ in range(3):
        append(c)
    lines = c.cmd(b"s SELECT INBOX (CONDSTORE)")
    hms = int(re.search(rb"HIGHESTMODSEQ (\d+)", b"\n".join(lines)).group(1))
    lines = c.cmd(b"f FETCH 1:* (MODSEQ)")
    modseqs = {int(m.group(1)): int(m.group(2)) for m in
               (re.match(rb"\* (\d+) FETCH \(MODSEQ \((\d+)\)\)", ln) for ln in lines) if m}
    assert set(modseqs) == {1, 2, 3} and max(modseqs.values()) <= hms
    # message 2 changes; then a conditional store on 1:3 with the old modseq fails for 2 only
    lines = c.cmd(b"a STORE 2 +FLAGS (\\Seen)")
    new2 = int(re.search(rb"MODSEQ \((\d+)\)", lines[0]).group(1))
    assert new2 > modseqs[2]
    since = max(modseqs.values())
    lines = c.cmd(b"b STORE 1:3 (UNCHANGEDSINCE %d) +FLAGS (\\Flagged)" % since)
    assert lines[-1].startswith(b"b OK [MODIFIED 2]")
    assert sum(1 for ln in lines if ln.startswith(b"* ") and b"\\Flagged" in ln) == 2
    lines = c.cmd(b"c FETCH 1:* (FLAGS) (CHANGEDSINCE %d)" % new2)
    fetched = sorted(int(ln.split()[1]) for ln in lines if ln.startswith(b"* "))
    assert fetched == [1, 3]
    assert all(b"MODSEQ" in ln for ln in lines if ln.startswith(b"* "))
    lines = c.cmd(b"d UID SEARCH MODSEQ %d" % (new2 + 1))
    assert re.match(rb"\* SEARCH 1 3 \(MODSEQ \d+\)", lines[0])
    c.close()


def test_qresync_select_reports_vanished_and_changes(mail_server):
    c = raw_login(mail_server)
    for _ in range(4):
        append(c)
    lines = c.cmd(b"s SELECT INBOX")
    uidvalidity = int(re.search(rb"UIDVALIDITY (\d+)", b"\n".join(lines)).group(1))
    hms = int(re.search(rb"HIGHESTMODSEQ (\d+)", b"\n".join(lines)).group(1))
    c.cmd(b"a STORE 2 +FLAGS.SILENT (\\Deleted)")
    c.cmd(b"b STORE 3 +FLAGS.SILENT (\\Flagged)")
    c.cmd(b"c EXPUNGE")
    c.cmd(b"u UNSELECT")
    assert c.cmd(b"e ENABLE QRESYNC")[0] == b"* ENABLED QRESYNC"
    lines = c.cmd(b"q SELECT INBOX (QRESYNC (%d %d 1:4))" % (uidvalidity, hms))
    assert b"* VANISHED (EARLIER) 2" in lines
    changed = [ln for ln in lines if re.match(rb"\* \d+ FETCH", ln)]
    assert len(changed) == 1 and b"UID 3" in changed[0] and b"\\Flagged" in changed[0]
    assert lines[-1].startswith(b"q OK [READ-WRITE]")
    # with QRESYNC enabled, expunges are reported as VANISHED
    c.cmd(b"d STORE 1 +FLAGS.SILENT (\\Deleted)")
    lines = c.cmd(b"x EXPUNGE")
    assert b"* VANISHED 1" in lines and not any(ln.endswith(b" EXPUNGE") for ln in lines)
    lines = c.cmd(b"v UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d VANISHED)" % hms)
    assert lines[0] == b"* VANISHED (EARLIER) 1:2"
    # selecting another mailbox while one is selected says [CLOSED]
    lines = c.cmd(b"z EXAMINE INBOX")
    assert lines[0] == b"* OK [CLOSED] Previous mailbox closed."
    c.close()


def test_imap4rev2_enable(mail_server):
    c = raw_login(mail_server)
    append(c)
    assert c.cmd(b"e ENABLE IMAP4rev2")[0] == b"* ENABLED IMAP4rev2"
    lines = c.cmd(b"s SELECT INBOX")
    assert not any(ln.endswith(b"RECENT") for ln in lines)
    lines = c.cmd(b"f SEARCH ALL")
    assert lines[0] == b'* ESEARCH (TAG "f") ALL 1'
    lines = c.cmd(b"g FETCH 1 FLAGS")
    assert lines[0] == b"* 1 FETCH (FLAGS ())"  # no \\Recent in IMAP4rev2
    c.close()


def test_autologout_after_login(make_server):
    from dovetail.imap.limits import Limits
    from tests.imap.memstore import MemStorages

    srv = make_server(limits=Limits(idle_timeout=0.5), storage_factory=MemStorages())
    c = raw_login(srv)
    assert c.readline(timeout=3).startswith(b"* BYE")
    assert c.closed()


def test_stop_says_bye_to_idle_clients(mail_server):
    a = raw_login(mail_server)
    a.cmd(b"s SELECT INBOX")
    a.send(b"i IDLE\r\n")
    assert a.readline() == b"+ idling"
    t0 = time.monotonic()
    mail_server.stop(grace=20)
    assert a.readline(timeout=3) == b"* BYE Server shutting down."
    assert a.closed()
    assert time.monotonic() - t0 < 10  # idle sessions are not kept for the grace period


def test_stop_says_bye_to_clients_between_commands(server):
    """Sessions waiting for their next command (logged in or not) are told at once, not after the grace."""
    logged_in = raw_login(server)
    logged_in.cmd(b"s SELECT INBOX")
    fresh = RawClient(server.port)
    t0 = time.monotonic()
    server.stop(grace=20)
    for c in (logged_in, fresh):
        assert c.readline(timeout=3) == b"* BYE Server shutting down."
        assert c.closed()
    assert time.monotonic() - t0 < 10


def test_missing_ranges():
    from dovetail.imap.sequence import SequenceSet, missing_ranges

    assert missing_ranges(None, [2, 3, 7], 9) == "1,4:6,8:9"
    assert missing_ranges(SequenceSet.parse("1:4294967295"), [1, 5], 4294967295) == "2:4,6:4294967295"
    assert missing_ranges(SequenceSet.parse("3,5:6"), [3, 4, 5, 6], 10) == ""


def test_client_that_does_not_read_is_dropped(make_server):
    import socket

    from dovetail.imap.limits import Limits
    from tests.imap.memstore import MemStorages

    srv = make_server(limits=Limits(write_timeout=0.5), storage_factory=MemStorages())
    c = raw_login(srv)
    big = MSG + b"x" * (1 << 20)
    assert append(c, data=big).startswith(b"ap OK")
    c.cmd(b"s SELECT INBOX")
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    c.send(b"".join(b"f%d FETCH 1 BODY.PEEK[]\r\n" % i for i in range(64)))  # 64 MB of answers, never read
    deadline = time.monotonic() + 20
    while srv.call(lambda: len(srv.server.sessions)) and time.monotonic() < deadline:
        time.sleep(0.05)  # polling the server's own session table; there is no event to wait on
    assert srv.call(lambda: len(srv.server.sessions)) == 0
    c.close()


def test_imapclient_idle_check(mail_server):
    from tests.imap.test_commands import client

    watcher = client(mail_server)
    watcher.select_folder("INBOX")
    watcher.idle()
    writer = client(mail_server, "alice")
    writer.append("INBOX", MSG)
    responses = watcher.idle_check(timeout=1.0)
    assert (1, b"EXISTS") in responses
    text, _ = watcher.idle_done()
    assert b"Idle completed" in text
    watcher.logout()
    writer.logout()
