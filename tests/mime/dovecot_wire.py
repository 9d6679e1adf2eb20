"""Read raw FETCH item text back out of imaplib responses (literals re-inlined), for comparisons."""

from __future__ import annotations

import imaplib
import re


def raw_fetch(client: imaplib.IMAP4, uid: int, item: str) -> bytes:
    """The wire text of one FETCH item's value, e.g. the parenthesised BODYSTRUCTURE."""
    typ, data = client.uid("FETCH", str(uid), f"({item})")
    assert typ == "OK", data
    chunks = []
    for piece in data:
        if isinstance(piece, tuple):
            head, lit = piece
            chunks.append(head + lit)
        elif piece is not None:
            chunks.append(piece)
    text = b"".join(chunks)
    head = re.match(rb"^\d+ \((UID \d+ )?", text)
    assert head, text[:200]
    text = text[head.end() :]
    tail = re.search(rb"( UID \d+)?\)$", text)
    assert tail, text[-200:]
    text = text[: tail.start()]
    name = item.replace(".PEEK", "").encode()
    assert text.upper().startswith(name.upper() + b" "), text[:200]
    return text[len(name) + 1 :]


def literal_or_string(value: bytes) -> bytes:
    """Decode an IMAP string as sent inline by ``raw_fetch`` ({n}+data was re-joined as {n}data)."""
    m = re.match(rb"^\{(\d+)\}", value)
    if m:
        return value[m.end() :]
    if value == b"NIL":
        return b""
    assert value.startswith(b'"') and value.endswith(b'"'), value[:100]
    return re.sub(rb'\\(["\\])', rb"\1", value[1:-1])


def ours_inline(wire: bytes) -> bytes:
    """Our to_imap output in the same shape as raw_fetch gives (literal CRLF after {n} removed)."""
    return re.sub(rb"\{(\d+)\}\r\n", rb"{\1}", wire)
