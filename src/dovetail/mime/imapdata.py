"""Serialise IMAP-ready data (nested lists, str, bytes, int, None) to IMAP wire text.

``None`` -> ``NIL``; ``int`` -> number; ``list`` -> parenthesised list; ``str``/``bytes`` -> a quoted
string when it is 7-bit without CR, LF, NUL, and short, else a literal ``{n}\\r\\n`` + bytes. ``str``
values carry raw header bytes through ``surrogateescape`` and are encoded back the same way.
"""

from __future__ import annotations

import re
from typing import Any

MAX_QUOTED = 1000
# What a quoted string cannot carry; one regex search runs in C, where a test per byte ran in Python
# (ENVELOPE and BODYSTRUCTURE are made for every message APPEND stores and EXPUNGE keeps).
_NOT_QUOTABLE = re.compile(rb"[\x00\n\r\x80-\xff]")


class Atom(str):
    """A string sent bare (a flag, ``NIL``-free atom)."""


def _string(raw: bytes, out: list[bytes]) -> None:
    if len(raw) <= MAX_QUOTED and _NOT_QUOTABLE.search(raw) is None:
        out.append(b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"')
    else:
        out.append(b"{%d}\r\n" % len(raw) + raw)


def _emit(value: Any, out: list[bytes]) -> None:
    if value is None:
        out.append(b"NIL")
    elif isinstance(value, bool):
        raise TypeError("bool is not IMAP data")
    elif isinstance(value, int):
        out.append(str(value).encode("ascii"))
    elif isinstance(value, Atom):
        out.append(value.encode("ascii"))
    elif isinstance(value, str):
        _string(value.encode("utf-8", "surrogateescape"), out)
    elif isinstance(value, bytes | bytearray | memoryview):
        _string(bytes(value), out)
    elif isinstance(value, list | tuple):
        out.append(b"(")
        for i, item in enumerate(value):
            if i:
                out.append(b" ")
            _emit(item, out)
        out.append(b")")
    else:
        raise TypeError(f"cannot serialise {type(value).__name__} as IMAP data")


def to_imap(value: Any) -> bytes:
    """IMAP wire bytes for ``value``."""
    out: list[bytes] = []
    _emit(value, out)
    return b"".join(out)


def _emit_addresses(value: Any, out: list[bytes]) -> None:
    if not value:
        out.append(b"NIL")
        return
    out.append(b"(")
    for addr in value:
        _emit(addr, out)
    out.append(b")")


def _emit_envelope(env: list[Any], out: list[bytes]) -> None:
    out.append(b"(")
    for i, item in enumerate(env):
        if i:
            out.append(b" ")
        if 2 <= i <= 7:
            _emit_addresses(item, out)
        else:
            _emit(item, out)
    out.append(b")")


def _emit_body(body: list[Any], out: list[bytes]) -> None:
    out.append(b"(")
    if body and isinstance(body[0], list):
        n = 0
        while n < len(body) and isinstance(body[n], list):
            _emit_body(body[n], out)
            n += 1
        for item in body[n:]:
            out.append(b" ")
            _emit(item, out)
    else:
        is_message = (
            len(body) > 9
            and isinstance(body[0], str)
            and body[0].lower() == "message"
            and isinstance(body[7], list)
            and isinstance(body[8], list)
        )
        for i, item in enumerate(body):
            if i:
                out.append(b" ")
            if is_message and i == 7:
                _emit_envelope(item, out)
            elif is_message and i == 8:
                _emit_body(item, out)
            else:
                _emit(item, out)
    out.append(b")")


def envelope_to_imap(env: list[Any]) -> bytes:
    """ENVELOPE text, with address lists written as RFC 3501's ``1*address`` (no separators)."""
    out: list[bytes] = []
    _emit_envelope(env, out)
    return b"".join(out)


def body_to_imap(body: list[Any]) -> bytes:
    """BODY/BODYSTRUCTURE text, with the parts of a multipart written as ``1*body`` (no separators)."""
    out: list[bytes] = []
    _emit_body(body, out)
    return b"".join(out)
