"""The readable text of a message for SEARCH BODY/TEXT: its text parts, transfer encoding and charset
undone, in order.

Built on our part-tree parser rather than ``email``'s ``walk()``: that one recurses once per level and
raises RecursionError on a message nested a thousand levels deep (which anyone can send), while our
parser stops at ``MAX_DEPTH`` and leaves deeper parts opaque, as Dovecot does. It is faster too.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import unicodedata
from collections.abc import Iterator

from dovetail.mime.parser import Part, parse_message, to_crlf
from dovetail.mime.transfer import decode_quoted_printable

_TEXTUAL = ("text", "message")


def body_text(raw: bytes, *, crlf: bool = False) -> str:
    """Every textual leaf part of ``raw`` decoded to str and joined by newlines; ``crlf``: ``raw`` is
    already in CRLF form (as the store reads messages), so its line endings are not looked at again."""
    return "\n".join(text for _subtype, text in text_parts(raw, crlf=crlf))


def fold_case(text: str) -> str:
    """Case-insensitive comparison form for SEARCH substring matching."""
    if text.isascii():
        return text.lower()
    return unicodedata.normalize("NFKD", text.casefold())


def text_parts(raw: bytes, *, crlf: bool = False) -> Iterator[tuple[str, str]]:
    """(content subtype, decoded text) of each textual leaf part in order; a multipart left opaque
    beyond the depth limit comes as it is written, with subtype ``""``."""
    data = raw if crlf else to_crlf(raw)
    stack: list[Part] = [parse_message(data, count_lines=False)]
    while stack:
        part = stack.pop()
        if part.children:
            stack.extend(reversed(part.children))
            continue
        if part.message is not None:
            stack.append(part.message)
            continue
        if part.is_multipart:  # beyond the depth limit: opaque, searched as it is written
            yield "", data[part.body_start : part.end].decode("utf-8", "replace")
            continue
        if part.ctype.maintype.lower() not in _TEXTUAL:
            continue
        body = _undo_transfer_encoding(data[part.body_start : part.end],
                                       part.header.get("content-transfer-encoding"))
        yield part.ctype.subtype.lower(), _decode(body, part.ctype.param("charset"))


def _undo_transfer_encoding(body: bytes, cte: str | None) -> bytes:
    encoding = (cte or "").strip().lower()
    if encoding == "base64":
        try:
            return base64.b64decode(b"".join(body.split()), validate=False)
        except (binascii.Error, ValueError):
            return body
    if encoding == "quoted-printable":
        return decode_quoted_printable(body)
    return body


def _decode(body: bytes, charset: str | None) -> str:
    name = (charset or "utf-8").strip().strip('"') or "utf-8"
    try:
        codecs.lookup(name)
    except LookupError:
        name = "utf-8"
    return body.decode(name, "replace")
