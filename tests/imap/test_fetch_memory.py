"""A small FETCH is answered on the event loop from memory once the messages are cached: every byte
must be what the storage thread's path gives, and another session's STORE must show in it."""

from __future__ import annotations

import pytest

from dovetail.imap.commands import fetch as fetch_mod
from tests.imap.imap_testkit import needs_storage
from tests.imap.test_commands import append_messages, raw_login

pytestmark = needs_storage

ITEMS = [
    b"(UID FLAGS RFC822.SIZE INTERNALDATE)",
    b"(ENVELOPE BODYSTRUCTURE BODY)",
    b"(BODY.PEEK[HEADER.FIELDS (From Subject)] BODY.PEEK[HEADER.FIELDS.NOT (Subject)] RFC822.HEADER)",
    b"(UID BODY.PEEK[] BODY.PEEK[1] BODY.PEEK[TEXT] BODY.PEEK[]<3.20> BINARY.PEEK[])",
    b"(FLAGS MODSEQ BODY.PEEK[HEADER])",
    b"(BINARY.PEEK[1] BINARY.SIZE[1])",  # a part's transfer encoding: its structure as data, from the index
]


def test_memory_answers_byte_for_byte_and_sees_other_sessions(make_server, monkeypatch: pytest.MonkeyPatch) -> None:
    srv = make_server()
    a = raw_login(srv)
    append_messages(a, range(1, 13))  # more than a FETCH reads row by row: the IMAP data gets cached
    assert a.cmd(b"s SELECT INBOX")[-1].startswith(b"s OK")
    warm = b"w FETCH 1:* (ENVELOPE BODY.PEEK[] BODY.PEEK[1] BODY.PEEK[HEADER] BODYSTRUCTURE INTERNALDATE)"
    assert a.cmd(warm)[-1].startswith(b"w OK")
    assert a.cmd(warm)[-1].startswith(b"w OK")
    assert a.cmd(b"c FETCH 1 (MODSEQ)")[-1].startswith(b"c OK")  # CONDSTORE on (its OK [HIGHESTMODSEQ] once)
    calls = []
    real = fetch_mod._from_memory
    monkeypatch.setattr(fetch_mod, "_from_memory", lambda *args: calls.append(real(*args)) or calls[-1])
    for items in ITEMS:
        for seqs in (b"3", b"2,5:7,12"):
            fast = a.cmd(b"f FETCH " + seqs + b" " + items)
            assert (calls[-1] is None) == (b"BINARY.SIZE" in items), items  # answered from memory
            monkeypatch.setattr(fetch_mod, "MEMORY_FETCH_MAX", 0)
            slow = a.cmd(b"f FETCH " + seqs + b" " + items)
            monkeypatch.setattr(fetch_mod, "MEMORY_FETCH_MAX", 256)
            assert calls[-1] is None
            assert fast == slow, items
    b = raw_login(srv)
    assert b.cmd(b"s SELECT INBOX")[-1].startswith(b"s OK")
    assert b.cmd(b"k STORE 3 +FLAGS (\\Flagged $Label1)")[-1].startswith(b"k OK")
    seen = b"".join(a.cmd(b"g FETCH 3 (FLAGS)"))
    assert b"\\Flagged" in seen and b"$Label1" in seen
    assert b"\\Flagged" in b"".join(a.cmd(b"h FETCH 3 (FLAGS)"))
    assert calls[-1] is not None  # quiet again after the refresh took the change in
    assert a.cmd(b"n FETCH 4 (BODY[1])")[-1].startswith(b"n OK")  # sets \Seen: the storage thread's path
    assert b"\\Seen" in b"".join(a.cmd(b"m FETCH 4 (FLAGS)"))
    a.close()
    b.close()
