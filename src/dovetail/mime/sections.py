"""BODY[section]<partial> by slicing the CRLF message with the offsets of its part tree."""

from __future__ import annotations

import functools
import re

from dovetail.mime.parser import Part, parse_header
from dovetail.storage.api import InvalidSection, Section

_SECTION = re.compile(
    r"^(?P<part>[1-9][0-9]{0,8}(?:\.[1-9][0-9]{0,8})*)?"
    r"(?:(?:^|\.)(?P<text>HEADER\.FIELDS\.NOT|HEADER\.FIELDS|HEADER|TEXT|MIME))?"
    r"(?:\s*\((?P<fields>[^()]*)\))?$",
    re.I,
)
_FIELD = re.compile(r"^[\x21-\x39\x3b-\x7e]+$")
MAX_FIELDS = 200


def parse_section(spec: str) -> Section:
    """``"1.2.MIME"``, ``"HEADER.FIELDS (From To)"``, ``""`` ... -> Section. Raises InvalidSection."""
    spec = spec.strip()
    m = _SECTION.match(spec)
    if not m or len(spec) > 10000:
        raise InvalidSection(f"bad section: {spec[:50]!r}")
    part = tuple(int(x) for x in m.group("part").split(".")) if m.group("part") else ()
    text = m.group("text").upper() if m.group("text") else None
    fields_raw = m.group("fields")
    if text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        if fields_raw is None:
            raise InvalidSection("HEADER.FIELDS needs a field list")
        names = fields_raw.replace('"', " ").split()
        if not names or len(names) > MAX_FIELDS or not all(_FIELD.match(n) for n in names):
            raise InvalidSection("bad header field list")
        return Section(part, text, tuple(n.upper() for n in names))
    if fields_raw is not None:
        raise InvalidSection("field list only after HEADER.FIELDS")
    if text == "MIME" and not part:
        raise InvalidSection("MIME needs a part number")
    return Section(part, text)


def find_part(root: Part, path: tuple[int, ...]) -> Part | None:
    """The part at a dotted path (RFC 3501 6.4.5 numbering). As in Dovecot, ``n.1`` of a leaf part
    inside a multipart is the leaf itself, while ``1.1`` of a single-part message is nothing."""
    cur = root
    via_self = False
    for depth, n in enumerate(path):
        if depth == 0:
            base = cur
        elif cur.message is not None:
            base = cur.message
        elif cur.is_multipart or (cur is not root and not via_self):
            base = cur
        else:
            return None
        if base.is_multipart:
            if n > len(base.children):
                return None
            cur = base.children[n - 1]
            via_self = False
        elif n == 1:
            cur = base
            via_self = True
        else:
            return None
    return cur


def _filter_fields(data: bytes, part: Part, names: tuple[str, ...], exclude: bool) -> bytes:
    header, _ = parse_header(data, part.header_start, part.body_start)
    return filter_fields(data[part.header_start : part.body_start], header.fields, names, exclude)


def filter_fields(block: bytes, fields: list[tuple[str, bytes]], names: tuple[str, ...], exclude: bool) -> bytes:
    """``HEADER.FIELDS (names)`` (or ``.NOT``) of the header ``block`` (with its blank line, as
    ``BODY[HEADER]`` gives it), whose parse is ``fields``."""
    wanted = _lowered(names if isinstance(names, tuple) else tuple(names))
    if exclude:
        kept = [raw for name, raw in fields if name not in wanted]
    else:
        kept = [raw for name, raw in fields if name in wanted]
    out = b"".join([r if r[-2:] == b"\r\n" else r + b"\r\n" for r in kept]) if kept else b""
    if not exclude:
        return out + b"\r\n"
    return out + b"\r\n" if block[-4:] == b"\r\n\r\n" or len(block) == 2 else out


class FieldIndex:
    """A header's fields by name, for ``HEADER.FIELDS`` of a message asked again and again (a mail
    client's message list): each field with its CRLF ensured, and the positions of each name, so a
    list of a few names costs a few lookups instead of a pass over every field."""

    __slots__ = ("lines", "positions")

    def __init__(self, fields: list[tuple[str, bytes]]) -> None:
        self.lines = [r if r[-2:] == b"\r\n" else r + b"\r\n" for _name, r in fields]
        positions: dict[str, tuple[int, ...]] = {}
        for i, (name, _raw) in enumerate(fields):
            positions[name] = positions.get(name, ()) + (i,)
        self.positions = positions

    def pick(self, names: tuple[str, ...]) -> bytes:
        """:func:`filter_fields` of ``names`` (not ``.NOT``): the same bytes."""
        get = self.positions.get
        found: list[int] = []
        for name in _lowered(names):
            found += get(name, ())
        if not found:
            return b"\r\n"
        found.sort()
        lines = self.lines
        return b"".join([lines[i] for i in found]) + b"\r\n"


@functools.lru_cache(maxsize=1024)
def _lowered(names: tuple[str, ...]) -> frozenset[str]:
    """The field names of a ``HEADER.FIELDS`` list as compared: a FETCH asks the same list of every
    message, so each list is lowered once."""
    return frozenset(n.lower() for n in names)


def extract(data: bytes, root: Part, section: Section) -> bytes:
    """Bytes of ``section`` of the message ``data`` (CRLF form) whose tree is ``root``; ``b""`` when
    the part does not exist."""
    part = find_part(root, section.part) if section.part else root
    if part is None:
        return b""
    text = section.text
    if text is None:
        return data[part.body_start : part.end] if section.part else data[root.header_start : root.end]
    if text == "MIME":
        if part is root and len(section.part) == 1 and not root.is_multipart:
            return data[root.header_start : root.body_start]
        return data[part.header_start : part.body_start]
    msg = part
    if section.part:
        if part.message is None:
            return b""
        msg = part.message
    if text == "HEADER":
        return data[msg.header_start : msg.body_start]
    if text == "TEXT":
        return data[msg.body_start : msg.end]
    return _filter_fields(data, msg, section.fields, text == "HEADER.FIELDS.NOT")


def apply_partial(data: bytes, partial: tuple[int, int] | None) -> bytes:
    if partial is None:
        return data
    start, length = partial
    return data[start : start + length]
