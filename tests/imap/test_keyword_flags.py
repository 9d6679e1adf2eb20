"""Keywords are named by a FLAGS response before any FETCH shows them (RFC 3501 §7.2.6; imaptest
counts a keyword in a FETCH that no FLAGS named as an error), in this session's STORE replies, in
updates caused by another session, and after SELECT for keywords already on messages."""

from __future__ import annotations

from tests.imap.imap_testkit import needs_storage
from tests.imap.test_commands import MSG, raw_login

pytestmark = needs_storage


def _first(lines: list[bytes], prefix: bytes) -> int:
    return next(i for i, ln in enumerate(lines) if ln.startswith(prefix))


def test_keywords_announced_before_use(make_server) -> None:
    srv = make_server()
    a = raw_login(srv)
    for _ in range(2):
        a.send(b"p APPEND INBOX {%d}\r\n" % len(MSG))
        assert a.readline().startswith(b"+")
        a.send(MSG + b"\r\n")
        assert a.read_until_tagged(b"p")[-1].startswith(b"p OK")
    lines = a.cmd(b"s SELECT INBOX")
    assert b"$Label1" not in b"".join(lines)

    lines = a.cmd(b"t STORE 1 +FLAGS ($Label1)")
    assert lines[-1].startswith(b"t OK")
    flags_at = _first(lines, b"* FLAGS (")
    assert b"$Label1" in lines[flags_at]
    assert b"$Label1" in lines[_first(lines, b"* OK [PERMANENTFLAGS (")]
    assert flags_at < _first(lines, b"* 1 FETCH")

    # Known now: no second FLAGS for the same keyword.
    lines = a.cmd(b"u STORE 2 +FLAGS ($Label1)")
    assert not [ln for ln in lines if ln.startswith(b"* FLAGS")]

    b = raw_login(srv)
    assert b.cmd(b"s SELECT INBOX")[-1].startswith(b"s OK")
    assert b.cmd(b"v STORE 2 +FLAGS.SILENT (Work)")[-1].startswith(b"v OK")
    lines = a.cmd(b"n NOOP")
    flags_at = _first(lines, b"* FLAGS (")
    assert b"Work" in lines[flags_at] and b"$Label1" in lines[flags_at]
    assert flags_at < _first(lines, b"* 2 FETCH")

    # A fresh SELECT starts a new list: a FETCH of a keyword already on a message announces it first.
    lines = b.cmd(b"x SELECT INBOX")
    lines = b.cmd(b"f FETCH 1:2 FLAGS")
    flags_at = _first(lines, b"* FLAGS (")
    assert b"Work" in lines[flags_at] and b"$Label1" in lines[flags_at]
    assert flags_at < _first(lines, b"* 1 FETCH")
    a.close()
    b.close()
