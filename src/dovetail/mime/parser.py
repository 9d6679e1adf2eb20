"""Parse a message once into a tree of MIME parts with byte offsets in its CRLF form.

Hand-written header/boundary scanner rather than the stdlib ``email`` parser: IMAP needs the exact
byte offsets of every part's header and body (to serve ``BODY[1.2.MIME]`` and partials by slicing),
which ``email`` does not keep, and the scanner works with ``bytes.find`` only, several times faster than
``email`` with ``compat32``. It never fails: broken input (missing boundaries, unterminated headers,
8-bit bytes) still yields a tree, as Dovecot's parser does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_DEPTH = 30
MAX_PARTS = 2000
MAX_HEADER_FIELDS = 5000


def to_crlf(data: bytes) -> bytes:
    """Line endings as IMAP sends them: every bare LF becomes CRLF (bare CR is kept)."""
    if b"\n" not in data:
        return data
    if b"\r\n" not in data:
        return data.replace(b"\n", b"\r\n")
    if data.count(b"\n") == data.count(b"\r\n"):
        return data  # already CRLF throughout: two counts cost less than two copies
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


@dataclass(slots=True)
class Header:
    """Parsed header block: ``fields`` holds ``(name, raw_field_bytes)`` where the raw bytes are the
    complete field with its folding and final CRLF."""

    fields: list[tuple[str, bytes]] = field(default_factory=list)

    def get_raw(self, name: str) -> bytes | None:
        """Value bytes of the first field ``name`` (after the colon), folding kept."""
        lname = name.lower()
        for fname, raw in self.fields:
            if fname == lname:
                return raw[raw.index(b":") + 1 :]
        return None

    def get(self, name: str) -> str | None:
        """Unfolded value of the first ``name`` field, stripped, as str (bytes kept via surrogateescape)."""
        raw = self.get_raw(name)
        if raw is None:
            return None
        return unfold(raw).decode("utf-8", "surrogateescape").strip(" \t")


def unfold(value: bytes) -> bytes:
    return value.replace(b"\r\n", b"").replace(b"\n", b"").rstrip(b"\r")


@dataclass(slots=True)
class ContentType:
    maintype: str = "text"
    subtype: str = "plain"
    params: list[tuple[str, str]] = field(default_factory=list)
    explicit: bool = False

    def param(self, name: str) -> str | None:
        lname = name.lower()
        for k, v in self.params:
            if k.lower() == lname:
                return v
        return None


@dataclass(slots=True)
class Part:
    """One MIME part. Offsets index the CRLF form of the message: ``header_start`` .. ``body_start`` is
    the header block including the blank line, ``body_start`` .. ``end`` the body. ``children`` are the
    parts of a multipart; ``message`` is the encapsulated message of a message/rfc822 part."""

    header_start: int
    body_start: int
    end: int
    header: Header
    ctype: ContentType
    children: list[Part] = field(default_factory=list)
    message: Part | None = None
    lines: int = 0

    @property
    def is_multipart(self) -> bool:
        return self.ctype.maintype.lower() == "multipart"

    @property
    def is_message(self) -> bool:
        return self.message is not None


_FIELD_NAME = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")


def parse_header(data: bytes, start: int, limit: int) -> tuple[Header, int]:
    """Parse the header at ``start``; return it and the body start offset (after the blank line)."""
    header = Header()
    pos = start
    if data.startswith(b"\r\n", pos) and pos + 2 <= limit:
        return header, pos + 2
    blank = data.find(b"\r\n\r\n", pos, limit)
    hend = limit if blank < 0 else blank + 2
    body_start = limit if blank < 0 else blank + 4
    current_name: str | None = None
    current_start = pos
    while pos < hend:
        nl = data.find(b"\r\n", pos, hend)
        line_end = hend if nl < 0 else nl + 2
        first = data[pos : pos + 1]
        if first in (b" ", b"\t") and current_name is not None:
            pos = line_end
            continue
        if current_name is not None:
            header.fields.append((current_name, data[current_start:pos]))
        if len(header.fields) >= MAX_HEADER_FIELDS:
            current_name = None
        else:
            m = _FIELD_NAME.match(data, pos, line_end)
            # a line that is not a field is kept under the name "" (BODY[HEADER.FIELDS.NOT] shows it)
            current_name = m.group(1).decode("ascii").lower() if m else ""
            current_start = pos
        pos = line_end
    if current_name is not None:
        header.fields.append((current_name, data[current_start:hend]))
    return header, body_start


# --- Content-Type and friends --------------------------------------------------------------------

_TOKEN = re.compile(r"[^\x00-\x20()<>@,;:\\\"/\[\]?=\x7f]+")


def _skip_cfws(s: str, i: int) -> int:
    n = len(s)
    while i < n:
        c = s[i]
        if c in " \t\r\n":
            i += 1
        elif c == "(":
            depth = 0
            while i < n:
                if s[i] == "\\":
                    i += 2
                    continue
                if s[i] == "(":
                    depth += 1
                elif s[i] == ")":
                    depth -= 1
                    if depth == 0:
                        i += 1
                        break
                i += 1
        else:
            break
    return i


def _quoted(s: str, i: int) -> tuple[str, int]:
    out = []
    i += 1
    n = len(s)
    while i < n:
        c = s[i]
        if c == "\\" and i + 1 < n:
            out.append(s[i + 1])
            i += 2
            continue
        if c == '"':
            return "".join(out), i + 1
        out.append(c)
        i += 1
    return "".join(out), i


def parse_params(s: str, i: int) -> list[tuple[str, str]]:
    """``; name=value; name="quoted"`` -> list of pairs, tolerant of junk."""
    params: list[tuple[str, str]] = []
    n = len(s)
    while i < n and len(params) < 100:
        i = _skip_cfws(s, i)
        if i >= n:
            break
        if s[i] != ";":
            nxt = s.find(";", i)
            if nxt < 0:
                break
            i = nxt
        i = _skip_cfws(s, i + 1)
        m = _TOKEN.match(s, i)
        if not m:
            continue
        name = m.group(0)
        i = _skip_cfws(s, m.end())
        if i >= n or s[i] != "=":
            continue
        i = _skip_cfws(s, i + 1)
        if i < n and s[i] == '"':
            value, i = _quoted(s, i)
        else:
            m = re.compile(r"[^;\s]*").match(s, i)
            assert m is not None
            value = m.group(0)
            i = m.end()
        params.append((name, value))
    return params


_CONTINUATION = re.compile(r"^(.+)\*(\d{1,3})$")


def join_continuations(params: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """RFC 2231 ``name*0``, ``name*1``... joined into ``name`` (extended ``name*0*`` forms are kept
    as they are, as Dovecot does)."""
    if not any("*" in k for k, _v in params):
        return params
    out: list[tuple[str, str]] = []
    pieces: dict[str, dict[int, str]] = {}
    for k, v in params:
        m = _CONTINUATION.match(k)
        if m:
            base = m.group(1)
            if base not in pieces:
                pieces[base] = {}
                out.append((base, ""))
            pieces[base][int(m.group(2))] = v
        else:
            out.append((k, v))
    return [(k, "".join(pieces[k][i] for i in sorted(pieces[k])) if k in pieces else v) for k, v in out]


def parse_content_type(value: str | None) -> ContentType:
    if value is None:
        return ContentType()
    i = _skip_cfws(value, 0)
    m = _TOKEN.match(value, i)
    if not m:
        return ContentType(params=[("charset", "us-ascii")])
    maintype = m.group(0)
    i = _skip_cfws(value, m.end())
    if i >= len(value) or value[i] != "/":
        return ContentType(params=[("charset", "us-ascii")])
    i = _skip_cfws(value, i + 1)
    m = _TOKEN.match(value, i)
    if not m:
        return ContentType(params=[("charset", "us-ascii")])
    return ContentType(maintype, m.group(0), join_continuations(parse_params(value, m.end())), explicit=True)


def parse_disposition(value: str | None) -> tuple[str, list[tuple[str, str]]] | None:
    if not value:
        return None
    i = _skip_cfws(value, 0)
    m = _TOKEN.match(value, i)
    if not m:
        return None
    return m.group(0), parse_params(value, m.end())


# --- the tree ------------------------------------------------------------------------------------


class _Budget:
    def __init__(self) -> None:
        self.parts = 0
        self.count_lines = True


def parse_message(data: bytes, *, count_lines: bool = True) -> Part:
    """Parse ``data`` (already in CRLF form, see :func:`to_crlf`) into its part tree. Without
    ``count_lines`` the parts' ``lines`` stay 0 (BODYSTRUCTURE needs them, the SEARCH text does not:
    counting is a pass over every text body)."""
    budget = _Budget()
    budget.count_lines = count_lines
    return _parse_part(data, 0, len(data), ContentType(params=[("charset", "us-ascii")]), 0, budget)


def _count_lines(data: bytes, start: int, end: int, budget: _Budget) -> int:
    """Line count as Dovecot reports it: the number of line feeds in the body."""
    return data.count(b"\n", start, end) if end > start and budget.count_lines else 0


def _parse_part(
    data: bytes, start: int, end: int, default: ContentType, depth: int, budget: _Budget, inner: bool = False
) -> Part:
    budget.parts += 1
    header, body_start = parse_header(data, start, end)
    if inner and body_start == end and end > start and data.startswith(b"\r\n", end):
        # a header running up to the next delimiter ends with its own line break (Dovecot counts it)
        if not data[start:end].endswith(b"\r\n"):
            end = body_start = end + 2
    ctype = parse_content_type(header.get("content-type")) if header.get_raw("content-type") else None
    if ctype is None or not ctype.explicit:
        ctype = ContentType(default.maintype, default.subtype, list(default.params))
        if header.get_raw("content-type") is not None and default.maintype == "message":
            ctype = ContentType(params=[("charset", "us-ascii")])
    part = Part(start, body_start, end, header, ctype)
    mt = ctype.maintype.lower()
    st = ctype.subtype.lower()
    if depth >= MAX_DEPTH or budget.parts >= MAX_PARTS:
        if mt in ("text", "message"):
            part.lines = _count_lines(data, body_start, end, budget)
        return part
    if mt == "multipart":
        boundary = ctype.param("boundary")
        child_default = (
            ContentType("message", "rfc822") if st == "digest" else ContentType(params=[("charset", "us-ascii")])
        )
        if boundary:
            spans, close_end = _split_multipart(
                data, body_start, end, boundary.encode("utf-8", "surrogateescape")
            )
            for cs, ce in spans:
                if budget.parts >= MAX_PARTS:
                    break
                part.children.append(_parse_part(data, cs, ce, child_default, depth + 1, budget))
            if close_end is not None and close_end > part.end:
                # the line break ending our close delimiter also precedes the parent's delimiter;
                # Dovecot counts it in this part
                part.end = close_end
    elif mt == "message" and st == "rfc822":
        # parsed as a message whatever its transfer encoding, as Dovecot 2.3 does
        part.message = _parse_part(
            data, body_start, end, ContentType(params=[("charset", "us-ascii")]), depth + 1, budget, inner=True
        )
        part.end = max(part.end, part.message.end)
        part.lines = _count_lines(data, body_start, part.end, budget)
    elif mt == "text":
        part.lines = _count_lines(data, body_start, end, budget)
    return part


def _split_multipart(
    data: bytes, start: int, end: int, boundary: bytes
) -> tuple[list[tuple[int, int]], int | None]:
    """Child (start, end) offsets between ``--boundary`` lines, and the end of the close delimiter line
    (None when missing: the last part then ends at ``end``). The CRLF before a delimiter belongs to the
    delimiter (RFC 2046)."""
    delim = b"--" + boundary
    spans: list[tuple[int, int]] = []
    pos = start
    child_start: int | None = None
    while pos < end:
        if data.startswith(delim, pos) and (pos == start or data[pos - 2 : pos] == b"\r\n"):
            after = pos + len(delim)
            is_close = data.startswith(b"--", after)
            line_end = data.find(b"\r\n", after, end)
            if line_end >= 0:
                line_end += 2
            elif data.startswith(b"\r\n", end):
                line_end = end + 2
            else:
                line_end = end
            if child_start is not None:
                cend = pos - 2 if pos - 2 >= child_start else child_start
                spans.append((child_start, cend))
                child_start = None
            if is_close:
                return spans, line_end
            child_start = line_end
            pos = line_end
            continue
        nxt = data.find(b"\r\n" + delim, pos, end)
        if nxt < 0:
            break
        pos = nxt + 2
    if child_start is not None:
        spans.append((child_start, end))
    return spans, None
