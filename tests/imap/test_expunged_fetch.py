"""A message expunged by another session between SELECT and FETCH: FETCH of index data still answers
(as Dovecot does), body data answers OK [EXPUNGEISSUED] as Dovecot does, and the EXPUNGE is reported afterwards."""

from __future__ import annotations

import re

from tests.imap.imap_testkit import needs_storage
from tests.imap.test_commands import MSG, raw_login

pytestmark = needs_storage


def test_fetch_after_anothers_expunge(make_server) -> None:
    srv = make_server()
    a = raw_login(srv)
    for _ in range(3):
        a.send(b"p APPEND INBOX {%d}\r\n" % len(MSG))
        assert a.readline().startswith(b"+")
        a.send(MSG + b"\r\n")
        assert a.read_until_tagged(b"p")[-1].startswith(b"p OK")
    assert a.cmd(b"s SELECT INBOX")[-1].startswith(b"s OK")
    b = raw_login(srv)
    assert b.cmd(b"s SELECT INBOX")[-1].startswith(b"s OK")
    assert b.cmd(b"d STORE 2 +FLAGS (\\Deleted)")[-1].startswith(b"d OK")
    assert b.cmd(b"e EXPUNGE")[-1].startswith(b"e OK")
    lines = a.cmd(b"f FETCH 1:* (UID FLAGS ENVELOPE)")
    assert lines[-1].startswith(b"f OK"), lines[-1]
    fetched = [ln for ln in lines if re.match(rb"^\* \d+ FETCH", ln)]
    assert len(fetched) == 3 and all(b"hello there" in ln for ln in fetched)
    assert b"\\Deleted" in fetched[1]
    lines = a.cmd(b"g FETCH 2 BODY.PEEK[]")
    assert lines[-1].startswith(b"g OK [EXPUNGEISSUED]")
    assert not [ln for ln in lines if ln.startswith(b"* 2 FETCH")]
    lines = a.cmd(b"n NOOP")
    assert b"* 2 EXPUNGE" in lines and lines[-1].startswith(b"n OK")
    lines = a.cmd(b"h FETCH 1:* (UID)")
    assert len([ln for ln in lines if b"FETCH" in ln and ln.startswith(b"*")]) == 2
    a.close()
    b.close()


def test_changes_found_with_the_command_are_reported_once(make_server) -> None:
    """FETCH, STORE and SEARCH refresh in the same worker call as their work: what that refresh found
    is reported before their tagged reply, once, and expunges wait for a command that allows them."""
    srv = make_server()
    a = raw_login(srv)
    for _ in range(2):
        a.send(b"p APPEND INBOX {%d}\r\n" % len(MSG))
        assert a.readline().startswith(b"+")
        a.send(MSG + b"\r\n")
        assert a.read_until_tagged(b"p")[-1].startswith(b"p OK")
    assert a.cmd(b"s SELECT INBOX")[-1].startswith(b"s OK")
    b = raw_login(srv)
    assert b.cmd(b"s SELECT INBOX")[-1].startswith(b"s OK")
    assert b.cmd(b"d STORE 1 +FLAGS (\\Deleted)")[-1].startswith(b"d OK")
    assert b.cmd(b"e EXPUNGE")[-1].startswith(b"e OK")
    b.send(b"p APPEND INBOX {%d}\r\n" % len(MSG))
    assert b.readline().startswith(b"+")
    b.send(MSG + b"\r\n")
    assert b.read_until_tagged(b"p")[-1].startswith(b"p OK")
    lines = a.cmd(b"f STORE 2 +FLAGS (\\Flagged)")  # no expunge reported during STORE
    assert lines[-1].startswith(b"f OK") and b"* 3 EXISTS" in lines
    assert not [ln for ln in lines if ln.endswith(b"EXPUNGE")]
    lines = a.cmd(b"g UID SEARCH ALL")
    assert lines[-1].startswith(b"g OK") and b"* 1 EXPUNGE" in lines
    assert lines.index(b"* 1 EXPUNGE") < len(lines) - 1
    lines = a.cmd(b"n NOOP")
    assert lines == [lines[-1]] and lines[-1].startswith(b"n OK")  # nothing reported twice
    lines = a.cmd(b"h FETCH 1:* (UID)")
    assert len([ln for ln in lines if ln.startswith(b"* ") and b"FETCH" in ln]) == 2
    a.close()
    b.close()
