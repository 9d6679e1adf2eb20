"""FETCH of only UID, FLAGS, MODSEQ and RFC822.SIZE takes its own path (the store's flag rows, one
format per message): its lines must be what the general item path gives for the same messages, with
keywords, \\Recent, a message another session expunged, and sections read twice from memory."""

from __future__ import annotations

import re

from tests.imap.imap_testkit import needs_storage
from tests.imap.test_commands import append_messages, msg, raw_login

pytestmark = needs_storage


def _fetched(lines: list[bytes]) -> dict[int, bytes]:
    out = {}
    for ln in lines:
        m = re.match(rb"^\* (\d+) FETCH \((.*)\)$", ln)
        if m:
            out[int(m.group(1))] = m.group(2)
    return out


def _drop(items: bytes, name: bytes) -> bytes:
    """``items`` without the ``NAME "..."`` item (INTERNALDATE, only there to force the general path)."""
    return re.sub(rb" ?" + name + rb' "[^"]*"', b"", items)


def test_row_path_matches_item_path(make_server) -> None:
    srv = make_server()
    a = raw_login(srv)
    append_messages(a, range(1, 6))
    assert a.cmd(b"s SELECT INBOX")[-1].startswith(b"s OK")
    assert a.cmd(b"k STORE 2 +FLAGS (\\Flagged $Label1)")[-1].startswith(b"k OK")
    b = raw_login(srv)
    assert b.cmd(b"s SELECT INBOX")[-1].startswith(b"s OK")
    assert b.cmd(b"d STORE 4 +FLAGS (\\Deleted)")[-1].startswith(b"d OK")
    assert b.cmd(b"e EXPUNGE")[-1].startswith(b"e OK")
    for items in (b"(FLAGS)", b"(UID RFC822.SIZE FLAGS MODSEQ)", b"(RFC822.SIZE)"):
        # FETCH, not UID FETCH: no EXPUNGE may be reported during it, so both see all five.
        rows = a.cmd(b"f FETCH 1:* " + items)
        assert rows[-1].startswith(b"f OK"), rows[-1]
        general = a.cmd(b"g FETCH 1:* " + items[:-1] + b" INTERNALDATE)")
        assert general[-1].startswith(b"g OK"), general[-1]
        fast, slow = _fetched(rows), _fetched(general)
        assert sorted(fast) == [1, 2, 3, 4, 5]
        assert fast == {seq: _drop(v, b"INTERNALDATE") for seq, v in slow.items()}
    flags = _fetched(a.cmd(b"h FETCH 1:* (FLAGS)"))
    assert b"$Label1" in flags[2] and b"\\Flagged" in flags[2] and b"\\Recent" in flags[1]
    assert b"\\Deleted" in flags[4]  # from the expunge history
    assert b"* 4 EXPUNGE" in a.cmd(b"u UID FETCH 1:* (FLAGS)")  # a UID FETCH may report it
    assert sorted(_fetched(a.cmd(b"v FETCH 1:* (FLAGS)"))) == [1, 2, 3, 4]
    a.close()
    b.close()


def test_sections_read_again_are_the_same(make_server) -> None:
    """The second FETCH of a section comes from the process's cache (part tree, header fields): the
    same bytes as the first, for header fields, a part and the text."""
    srv = make_server()
    a = raw_login(srv)
    body = msg(1).replace(b"Date:", b"Cc: carl@example.net\r\nX-Folded: one\r\n two\r\nDate:")
    a.send(b"p APPEND INBOX {%d}\r\n" % len(body))
    assert a.readline().startswith(b"+")
    a.send(body + b"\r\n")
    assert a.read_until_tagged(b"p")[-1].startswith(b"p OK")
    assert a.cmd(b"s SELECT INBOX")[-1].startswith(b"s OK")
    spec = (b"(BODY.PEEK[HEADER.FIELDS (SUBJECT X-FOLDED)] BODY.PEEK[HEADER.FIELDS.NOT (SUBJECT)] "
            b"BODY.PEEK[1] BODY.PEEK[TEXT])")
    first = a.cmd(b"f FETCH 1 " + spec)
    second = a.cmd(b"g FETCH 1 " + spec)
    assert first[-1].startswith(b"f OK") and second[-1].startswith(b"g OK")
    assert first[:-1] == second[:-1]
    joined = b"\r\n".join(first)
    assert b"Subject: hello 1\r\nX-Folded: one\r\n two\r\n\r\n" in joined
    assert b"Cc: carl@example.net" in joined
    a.close()
