"""ESORT, PARTIAL and CONTEXT=SEARCH (RFC 5267): ESEARCH answers to SORT in sort order, result windows,
and live searches that report ADDTO/REMOVEFROM until CANCELUPDATE."""

from __future__ import annotations

from dovetail.imap.sequence import format_ordered
from tests.imap.imap_testkit import needs_storage
from tests.imap.test_commands import raw_login

pytestmark = needs_storage


def _fill(c, n: int) -> None:
    for i in range(1, n + 1):
        msg = b"From: a@example.org\r\nSubject: s%d\r\n\r\nbody %d\r\n" % (i, i)
        c.send(b"p APPEND INBOX {%d+}\r\n" % len(msg) + msg + b"\r\n")
        assert c.read_until_tagged(b"p")[-1].startswith(b"p OK")
    assert c.cmd(b"s SELECT INBOX")[-1].startswith(b"s OK")


def _esearch(lines: list[bytes]) -> list[bytes]:
    return [ln for ln in lines if ln.startswith(b"* ESEARCH")]


def test_format_ordered() -> None:
    assert format_ordered([5, 3, 4, 2, 1]) == "5,3:4,2,1"
    assert format_ordered([1, 2, 3]) == "1:3" and format_ordered([]) == ""


def test_esort_and_partial(make_server) -> None:
    c = raw_login(make_server())
    _fill(c, 5)
    assert _esearch(c.cmd(b"a SORT RETURN (MIN MAX COUNT) (REVERSE SUBJECT) US-ASCII ALL")) == [
        b'* ESEARCH (TAG "a") MIN 5 MAX 1 COUNT 5']
    assert _esearch(c.cmd(b"b SORT RETURN (ALL) (REVERSE SUBJECT) US-ASCII ALL")) == [
        b'* ESEARCH (TAG "b") ALL 5,4,3,2,1']
    assert _esearch(c.cmd(b"c SEARCH RETURN (PARTIAL 4:2) ALL")) == [b'* ESEARCH (TAG "c") PARTIAL (2:4 2:4)']
    assert _esearch(c.cmd(b"d SEARCH RETURN (PARTIAL 6:9) ALL")) == [b'* ESEARCH (TAG "d") PARTIAL (6:9 NIL)']
    assert _esearch(c.cmd(b"e SORT RETURN (PARTIAL 1:2) (REVERSE SUBJECT) US-ASCII ALL")) == [
        b'* ESEARCH (TAG "e") PARTIAL (1:2 5,4)']
    for bad in (b"PARTIAL 1", b"PARTIAL 1:*", b"PARTIAL 0:3"):
        assert c.cmd(b"f SEARCH RETURN (" + bad + b") ALL")[-1].startswith(b"f BAD")
    c.close()


def test_live_search_reports_changes_until_cancelled(make_server) -> None:
    srv = make_server()
    c = raw_login(srv)
    _fill(c, 5)
    assert _esearch(c.cmd(b"L SEARCH RETURN (UPDATE) SEEN")) == [b'* ESEARCH (TAG "L")']
    assert b'* ESEARCH (TAG "L") ADDTO (0 1:2,4)' in c.cmd(b"a STORE 1,2,4 +FLAGS.SILENT (\\Seen)")
    assert b'* ESEARCH (TAG "L") REMOVEFROM (0 2)' in c.cmd(b"b STORE 2 -FLAGS.SILENT (\\Seen)")
    # Another session's change and an expunge: the removed message is named by its old number,
    # before its EXPUNGE response.
    other = raw_login(srv)
    assert other.cmd(b"s SELECT INBOX")[-1].startswith(b"s OK")
    assert other.cmd(b"d STORE 4 +FLAGS.SILENT (\\Deleted)")[-1].startswith(b"d OK")
    assert other.cmd(b"e EXPUNGE")[-1].startswith(b"e OK")
    assert other.cmd(b"f STORE 3 +FLAGS.SILENT (\\Seen)")[-1].startswith(b"f OK")
    lines = c.cmd(b"n NOOP")
    removed = lines.index(b'* ESEARCH (TAG "L") REMOVEFROM (0 4)')
    assert removed < lines.index(b"* 4 EXPUNGE")
    assert b'* ESEARCH (TAG "L") ADDTO (0 3)' in lines
    # UID form, and CANCELUPDATE ends the reports.
    lines = c.cmd(b"U UID SEARCH RETURN (UPDATE ALL) SEEN")
    assert _esearch(lines)[0].startswith(b'* ESEARCH (TAG "U") UID ALL ')
    assert c.cmd(b'x CANCELUPDATE "L" "U"')[-1].startswith(b"x OK")
    assert not _esearch(c.cmd(b"g STORE 2 +FLAGS.SILENT (\\Seen)"))
    assert c.cmd(b'y CANCELUPDATE "L"')[-1].startswith(b"y BAD")
    other.close()
    c.close()
