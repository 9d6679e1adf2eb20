"""Bounding how deep a reply's MIME structure nests before the stdlib ``email`` parser reads it.

``email`` parses (and walks, and serialises) nested multiparts and message/rfc822 parts by recursion:
a message nesting a thousand levels, which anyone can send, ends in ``RecursionError`` and the reply
was lost. As the IMAP side does (:mod:`dovetail.mime.parser` stops at ``MAX_DEPTH`` and leaves deeper
parts opaque, like Dovecot), the structure is looked at first with that depth-bounded parser, and a
part at the bound that would nest further is handed to ``email`` as an opaque leaf
(``application/octet-stream``): everything within the bound is read as before, a delivery report in
it included, and the reply says that its structure was cut (``mime_depth_limited``).
"""

from __future__ import annotations

import re

from dovetail.mime.parser import MAX_DEPTH, Part, parse_message, to_crlf

OPAQUE_HEADER = b"Content-Type: application/octet-stream\r\nX-Dovetail-Opaque: mime nesting too deep\r\n\r\n"
# Every level of nesting but the implicit message/rfc822 of a digest names its Content-Type, so a
# message with few of them cannot be deep, and most replies need no second look.
_CONTENT_TYPE = re.compile(rb"content-type[ \t]*:", re.I)


def bound_depth(raw: bytes) -> tuple[bytes, bool]:
    """``raw`` with every part at ``MAX_DEPTH`` that nests further made an opaque leaf, and whether any
    was; ``raw`` itself when nothing nests that deep."""
    if len(_CONTENT_TYPE.findall(raw, 0, len(raw))) * 2 < MAX_DEPTH:
        return raw, False
    data = to_crlf(raw)
    cuts: list[Part] = []
    _too_deep(parse_message(data), cuts)
    if not cuts:
        return raw, False
    out: list[bytes] = []
    pos = 0
    for part in sorted(cuts, key=lambda p: p.header_start):
        if part.header_start < pos:
            continue  # inside a part already made opaque
        out.append(data[pos:part.header_start])
        out.append(OPAQUE_HEADER)
        pos = part.body_start
    out.append(data[pos:])
    return b"".join(out), True


def _nests(part: Part) -> bool:
    ctype = part.ctype
    kind = ctype.maintype.lower()
    return kind == "multipart" or (kind == "message" and ctype.subtype.lower() in ("rfc822", "global"))


def _too_deep(root: Part, cuts: list[Part]) -> None:
    """Collect the parts at ``MAX_DEPTH`` that would nest further (the parser left them unparsed)."""
    stack = [(root, 0)]
    while stack:
        node, level = stack.pop()
        if level >= MAX_DEPTH:
            if _nests(node):
                cuts.append(node)
            continue
        stack.extend((child, level + 1) for child in node.children)
        if node.message is not None:
            stack.append((node.message, level + 1))
