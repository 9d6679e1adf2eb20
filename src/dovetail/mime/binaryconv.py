"""APPEND of a message sent as a literal8 (RFC 3516): parts in ``Content-Transfer-Encoding: binary``
are stored in base64, as Dovecot's APPEND does.

A binary part may hold NULs and bare line feeds that a mailbox (and every BODY[] fetch) would mangle;
in base64 it survives line-ending normalisation, BODY[] answers are plain text, and BINARY[] gives
the client its exact bytes back.
"""

from __future__ import annotations

import base64

from dovetail.mime.parser import Part, parse_message


def encode_binary_parts(data: bytes) -> bytes:
    """``data`` with each leaf part whose transfer encoding is ``binary`` re-encoded in base64."""
    if b"binary" not in data.lower():
        return data
    edits: list[tuple[int, int, bytes]] = []
    _collect(data, parse_message(data), edits)
    for start, end, replacement in sorted(edits, reverse=True):
        data = data[:start] + replacement + data[end:]
    return data


def _collect(data: bytes, part: Part, edits: list[tuple[int, int, bytes]]) -> None:
    if part.children:
        for child in part.children:
            _collect(data, child, edits)
        return
    if part.message is not None:
        _collect(data, part.message, edits)
        return
    cte = (part.header.get("content-transfer-encoding") or "").strip().lower()
    if cte != "binary":
        return
    header = bytearray()
    for name, raw in part.header.fields:
        header += b"Content-Transfer-Encoding: base64\r\n" if name == "content-transfer-encoding" else raw
    header += b"\r\n"
    body = base64.encodebytes(data[part.body_start : part.end]).replace(b"\n", b"\r\n")
    edits.append((part.header_start, part.end, bytes(header) + body))
