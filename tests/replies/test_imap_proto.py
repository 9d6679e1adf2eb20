"""The sans-I/O IMAP response parser: literals split anywhere, limits, and fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dovetail.replies.imapc import proto
from dovetail.replies.imapc.proto import ProtocolError, ResponseParser

STREAM = (b"* OK [CAPABILITY IMAP4rev1 IDLE AUTH=PLAIN] ready\r\n"
          b"* 2 FETCH (UID 17 FLAGS (\\Seen) BODY[] {12}\r\nhello\r\nworld)\r\n"
          b'* LIST (\\HasNoChildren) "/" "Sent \\"Items\\""\r\n'
          b"* SEARCH 3 9\r\nD0001 OK [READ-ONLY] done\r\n")


def _all(parser: ResponseParser) -> list[proto.Response]:
    out = []
    while (r := parser.next_response()) is not None:
        out.append(r)
    return out


@pytest.mark.parametrize("chunk", [1, 2, 7, 64, len(STREAM)])
def test_parse_in_any_chunking(chunk: int) -> None:
    p = ResponseParser()
    got = []
    for i in range(0, len(STREAM), chunk):
        p.feed(STREAM[i:i + chunk])
        got += _all(p)
    assert [r.kind for r in got] == ["OK", "FETCH", "LIST", "SEARCH", "OK"]
    assert got[0].code == "CAPABILITY IMAP4rev1 IDLE AUTH=PLAIN"
    assert proto.fetch_items(got[1].data) == {"UID": "17", "FLAGS": ["\\Seen"], "BODY[]": b"hello\r\nworld"}
    assert got[2].data == [["\\HasNoChildren"], "/", 'Sent "Items"']
    assert got[3].data == ["3", "9"] and got[4].tag == "D0001" and got[4].code == "READ-ONLY"


def test_limits() -> None:
    p = ResponseParser()
    p.feed(b"* 1 FETCH (BODY[] {999999999999}\r\n")
    with pytest.raises(ProtocolError):
        p.next_response()
    p = ResponseParser()
    p.feed(b"* " + b"x" * (proto.MAX_LINE + 10))
    with pytest.raises(ProtocolError):
        p.next_response()
    p = ResponseParser()
    p.feed(b"* 1 FETCH " + b"(" * 100 + b")" * 100 + b"\r\n")
    with pytest.raises(ProtocolError):
        p.next_response()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_only_protocol_errors(data: bytes) -> None:
    p = ResponseParser()
    p.feed(data + b"\r\n")
    try:
        _all(p)
    except ProtocolError:
        pass


def test_commands_quote_and_encode() -> None:
    assert proto.quote("INBOX") == b"INBOX"
    assert proto.quote('a b"c\\') == b'"a b\\"c\\\\"'
    with pytest.raises(ValueError):
        proto.quote("a\r\nb")
    assert proto.encode_mailbox("Entwürfe") == "Entw&APw-rfe"
    assert proto.encode_mailbox("a&b") == "a&-b"


def test_many_literals_in_one_response_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each literal under the limit, but one response carrying them without end: refused, not buffered."""
    monkeypatch.setattr(proto, "MAX_LITERAL", 1000)
    monkeypatch.setattr(proto, "MAX_RESPONSE", 5000)
    p = ResponseParser()
    with pytest.raises(ProtocolError, match="response too large"):
        for i in range(20):
            p.feed(b"* %d FETCH (BODY[] {1000}\r\n" % (i + 1) + b"x" * 1000 if i == 0 else b" {1000}\r\n" + b"x" * 1000)
            assert p.next_response() is None
    p2 = ResponseParser()  # under the total it still parses
    p2.feed(b"* 1 FETCH (BODY[] {1000}\r\n" + b"x" * 1000 + b" BODY[1] {1000}\r\n" + b"y" * 1000 + b")\r\n")
    resp = p2.next_response()
    assert resp is not None and resp.kind == "FETCH"
