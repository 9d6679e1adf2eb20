"""Broken and random input never breaks the parser, and every offset stays inside the message."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dovetail.mime.imapdata import body_to_imap, envelope_to_imap
from dovetail.mime.parser import Part, parse_message, to_crlf
from dovetail.mime.sections import extract, parse_section
from dovetail.mime.structure import bodystructure, envelope

_lines = st.sampled_from(
    [
        b"Content-Type: multipart/mixed; boundary=b",
        b"Content-Type: message/rfc822",
        b"Content-Type: text/plain; charset=\"x",
        b"--b",
        b"--b--",
        b"From: \"unterminated <a@b",
        b"To: g: a@b, (comment (nested) c@d;",
        b"Subject: =?utf-8?q?x?=",
        b"",
        b"\xff\xfe 8-bit",
        b" folded",
        b"body text",
    ]
)


def _check(part: Part, size: int) -> None:
    assert 0 <= part.header_start <= part.body_start <= size
    assert part.end <= size + 2
    for child in part.children:
        _check(child, size)
    if part.message is not None:
        _check(part.message, size)


@settings(max_examples=200, deadline=None)
@given(st.lists(_lines, max_size=30), st.binary(max_size=40))
def test_structured_garbage(lines: list[bytes], tail: bytes) -> None:
    data = to_crlf(b"\n".join(lines) + tail)
    root = parse_message(data)
    _check(root, len(data))
    envelope_to_imap(envelope(root.header))
    body_to_imap(bodystructure(data, root))
    for spec in ("", "1", "1.MIME", "2.1", "HEADER", "TEXT", "1.HEADER.FIELDS (To)"):
        extract(data, root, parse_section(spec))


def test_deep_nesting_is_bounded() -> None:
    head = b"".join(b"Content-Type: multipart/mixed; boundary=b%d\n\n--b%d\n" % (i, i) for i in range(500))
    data = to_crlf(head + b"\nbody\n")
    root = parse_message(data)
    depth = 0
    while root.children:
        root = root.children[0]
        depth += 1
    assert depth <= 30
