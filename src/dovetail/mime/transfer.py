"""Undoing a part's Content-Transfer-Encoding for IMAP BINARY (RFC 3516).

Quoted-printable is decoded here rather than with ``quopri``/``binascii.a2b_qp`` because those keep
the trailing white space RFC 2045 §6.7 (3) says a decoder must delete, and do not see ``=`` followed
by white space as the soft line break it is; both are what Dovecot (and imaptest) expect.
"""

from __future__ import annotations

import re

_LINE = re.compile(rb"([^\n]*)(\n|$)")
_HEX = b"0123456789ABCDEFabcdef"


def decode_quoted_printable(data: bytes) -> bytes:
    """RFC 2045 §6.7: trailing white space dropped, ``=`` at a line's end (even before white space)
    joins it to the next, ``=XY`` an octet; an ``=`` that starts no escape stays as it is."""
    out = bytearray()
    for m in _LINE.finditer(data):
        line, newline = m.group(1), m.group(2)
        if not line and not newline:
            break
        if line.endswith(b"\r"):
            line = line[:-1]
        line = line.rstrip(b" \t")
        soft = line.endswith(b"=")
        if soft:
            line = line[:-1]
        out += _unescape(line)
        if newline and not soft:
            out += b"\r\n"
    return bytes(out)


def _unescape(line: bytes) -> bytes:
    if b"=" not in line:
        return line
    out = bytearray()
    i, n = 0, len(line)
    while i < n:
        c = line[i]
        if c == 0x3D and i + 2 < n and line[i + 1] in _HEX and line[i + 2] in _HEX:
            out.append(int(line[i + 1 : i + 3], 16))
            i += 3
            continue
        out.append(c)
        i += 1
    return bytes(out)
