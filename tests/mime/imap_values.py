"""Parse IMAP data text (NIL, numbers, quoted strings, literals, lists) to Python, for comparing
answers structurally: a server may pick a literal or a quoted string for the same value."""

from __future__ import annotations

import re
from typing import Any

_NUM = re.compile(rb"\d+")
_ATOM = re.compile(rb"[^\s()\"{]+")


def parse(text: bytes) -> Any:
    value, pos = _value(text, 0)
    assert pos == len(text), text[pos : pos + 50]
    return value


def _value(t: bytes, i: int) -> tuple[Any, int]:
    c = t[i : i + 1]
    if c == b"(":
        items = []
        i += 1
        while True:
            while t[i : i + 1] == b" ":
                i += 1
            if t[i : i + 1] == b")":
                return items, i + 1
            item, i = _value(t, i)
            items.append(item)
    if c == b'"':
        out = bytearray()
        i += 1
        while t[i : i + 1] != b'"':
            if t[i : i + 1] == b"\\":
                i += 1
            out += t[i : i + 1]
            i += 1
        return bytes(out), i + 1
    if c == b"{":
        m = re.compile(rb"\{(\d+)\}(\r\n)?").match(t, i)
        assert m
        n = int(m.group(1))
        return t[m.end() : m.end() + n], m.end() + n
    m = _NUM.match(t, i)
    if m and not _ATOM.match(t, i).group(0)[m.end() - i :]:
        return int(m.group(0)), m.end()
    m = _ATOM.match(t, i)
    assert m, t[i : i + 50]
    word = m.group(0)
    return (None if word.upper() == b"NIL" else word), m.end()
