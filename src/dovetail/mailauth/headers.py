"""The header block of a message as bytes: splitting it off, and renaming A-R headers that claim to be ours.

RFC 8601 §5: a receiver must not let an incoming ``Authentication-Results`` header that carries its
own authserv-id pass as its verdict. Such headers are kept, renamed to
``X-Original-Authentication-Results``, so nothing downstream can take them for ours and the
evidence stays in the message. Works on bytes (no parse and re-serialise of the message), so the
body and every other header reach the Maildir as they arrived and DKIM signatures stay valid.
"""

from __future__ import annotations

import re

RENAMED = b"X-Original-Authentication-Results"
_AR = re.compile(rb"authentication-results[ \t]*:", re.IGNORECASE)


def split_message(message: bytes) -> tuple[bytes, bytes]:
    """(header block including its final line break, body): the blank line goes with the body."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        i = message.find(sep)
        if i >= 0:
            return message[:i + len(sep) // 2], message[i + len(sep) // 2:]
    return message, b""


def _strip_comments(text: str) -> str:
    depth, out = 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
        elif not depth:
            out.append(ch)
    return "".join(out)


def authserv_id(value: bytes) -> str:
    """The authserv-id of an A-R header value (comments and the version dropped), lowercase."""
    text = _strip_comments(value.decode("utf-8", "replace")).split(";", 1)[0]
    parts = text.split()
    return parts[0].strip('"').lower().rstrip(".") if parts else ""


def rename_ours(header_block: bytes, our_id: str) -> tuple[bytes, int]:
    """The header block with each A-R header naming ``our_id`` renamed; and how many were."""
    lines = header_block.splitlines(keepends=True)
    ours = our_id.lower().rstrip(".")
    out: list[bytes] = []
    renamed = 0
    i = 0
    while i < len(lines):
        line = lines[i]
        j = i + 1
        while j < len(lines) and lines[j][:1] in (b" ", b"\t"):
            j += 1
        m = _AR.match(line)
        if m and authserv_id(b"".join(lines[i:j])[m.end():]) == ours:
            out.append(RENAMED + line[m.end() - 1:])
            out.extend(lines[i + 1:j])
            renamed += 1
        else:
            out.extend(lines[i:j])
        i = j
    return b"".join(out), renamed
