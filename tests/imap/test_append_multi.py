"""MULTIAPPEND (RFC 3502: all or nothing, APPENDUID with a UID set) and CATENATE (RFC 4469: text
literals and URLs of parts of our own messages; BADURL and TRYCREATE)."""

from __future__ import annotations

import re

from dovetail.imap.limits import Limits
from tests.imap.imap_testkit import needs_storage
from tests.imap.test_commands import raw_login

pytestmark = needs_storage

ONE = b"From: a@example.org\r\nSubject: one\r\n\r\nbody one\r\n"
TWO = b"From: b@example.org\r\nSubject: two\r\n\r\nbody two\r\n"


def _lit(data: bytes) -> bytes:
    return b"{%d+}\r\n" % len(data) + data


def _count(c, box: bytes) -> int:
    lines = c.cmd(b"s STATUS " + box + b" (MESSAGES)")
    return int(re.search(rb"MESSAGES (\d+)", lines[0]).group(1))


def test_multiappend_is_all_or_nothing(make_server) -> None:
    srv = make_server(limits=Limits(auth_fail_base_delay=0.01, max_literal=200))
    c = raw_login(srv)
    lines = c.cmd(b"a APPEND INBOX (\\Seen) " + _lit(ONE) + b" " + _lit(TWO))
    m = re.match(rb"a OK \[APPENDUID (\d+) (\d+):(\d+)\]", lines[-1])
    assert m and int(m.group(3)) == int(m.group(2)) + 1, lines
    assert _count(c, b"INBOX") == 2
    # The second message is over the limit: neither is stored.
    big = TWO + b"x" * 300
    lines = c.cmd(b"b APPEND INBOX " + _lit(ONE) + b" " + _lit(big))
    assert lines[-1].startswith(b"b NO")
    assert _count(c, b"INBOX") == 2
    lines = c.cmd(b'u APPEND INBOX ' + _lit(ONE) + b' CATENATE (URL "/INBOX/;UID=999")')
    assert lines[-1].startswith(b"u NO [BADURL")
    assert _count(c, b"INBOX") == 2
    assert c.cmd(b"t APPEND Nowhere " + _lit(ONE) + b" " + _lit(TWO))[-1].startswith(b"t NO [TRYCREATE]")
    c.close()


def test_catenate_joins_text_and_parts_of_our_messages(make_server) -> None:
    c = raw_login(make_server())
    lines = c.cmd(b"a APPEND INBOX " + _lit(ONE))
    uidvalidity, uid = re.search(rb"APPENDUID (\d+) (\d+)", lines[-1]).groups()
    url = b'"/INBOX;UIDVALIDITY=' + uidvalidity + b"/;UID=" + uid + b'/;SECTION=HEADER"'
    lines = c.cmd(b"b APPEND INBOX CATENATE (URL " + url + b" TEXT " + _lit(b"new body\r\n") + b")")
    assert lines[-1].startswith(b"b OK [APPENDUID"), lines
    assert c.cmd(b"s SELECT INBOX")[-1].startswith(b"s OK")
    body = c.fetch_literal(b"f", b"FETCH 2 BODY.PEEK[]")
    assert body == ONE.split(b"\r\n\r\n")[0] + b"\r\n\r\nnew body\r\n"
    # A URL to a message that is not there, or with another UIDVALIDITY: BADURL, nothing stored.
    for bad in (b'"/INBOX/;UID=999/;SECTION=TEXT"', b'"/INBOX;UIDVALIDITY=1/;UID=' + uid + b'"', b'"http://x/"'):
        lines = c.cmd(b"c APPEND INBOX CATENATE (TEXT " + _lit(b"x\r\n") + b" URL " + bad + b")")
        assert lines[-1].startswith(b"c NO [BADURL"), lines
    assert _count(c, b"INBOX") == 2
    c.close()
