"""IMAP4 responses, sans-I/O: ``feed(bytes)`` then ``next_response()`` yields parsed responses.

A response is a line that may carry literals (``{n}\\r\\n`` followed by n bytes) before it ends.
Tokens are atoms (``str``), quoted strings (``str``), literals (``bytes``), ``None`` for NIL and
nested ``list`` for parenthesised lists. Every size the server controls has a limit.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field

from dovetail.storage.names import encode_mutf7

MAX_LINE = 256 * 1024
MAX_LITERAL = 60 * 1024 * 1024
MAX_TOKENS = 100_000
MAX_DEPTH = 32
MAX_RESPONSE = 2 * MAX_LITERAL + MAX_LINE  # all lines and literals of one response (BODY[] plus a header)


class ProtocolError(Exception):
    """The server sent something that is not IMAP, or exceeded a limit."""


@dataclass
class Response:
    tag: str  # "*" untagged, "+" continuation, or a command tag
    kind: str = ""  # OK NO BAD BYE PREAUTH CAPABILITY EXISTS FETCH SEARCH ... (upper case)
    number: int | None = None  # "* 5 EXISTS" -> 5
    code: str = ""  # response code without brackets, e.g. "UIDVALIDITY 3"
    text: str = ""
    data: list = field(default_factory=list)  # tokens after the kind


_LITERAL_AT_END = re.compile(rb"\{(\d{1,12})\+?\}\r\n$")


class ResponseParser:
    def __init__(self) -> None:
        self._buf = bytearray()
        self._parts: list[bytes | tuple[bytes]] = []  # line pieces and (literal,) pieces of one response
        self._need: int | None = None  # bytes of literal still to read
        self._size = 0  # octets of the response being assembled

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next_response(self) -> Response | None:
        while True:
            if self._need is not None:
                if len(self._buf) < self._need:
                    return None
                self._parts.append((bytes(self._buf[: self._need]),))
                del self._buf[: self._need]
                self._need = None
            end = self._buf.find(b"\r\n")
            if end < 0:
                if len(self._buf) > MAX_LINE:
                    raise ProtocolError("response line too long")
                return None
            if end > MAX_LINE:
                raise ProtocolError("response line too long")
            line = bytes(self._buf[: end + 2])
            del self._buf[: end + 2]
            self._size += len(line)
            if b"\x00" in line:
                raise ProtocolError("NUL in a response line")
            m = _LITERAL_AT_END.search(line)
            if m:
                size = int(m.group(1))
                if size > MAX_LITERAL:
                    raise ProtocolError("literal too large")
                self._size += size
                if self._size > MAX_RESPONSE:
                    raise ProtocolError("response too large")
                self._parts.append(line[: m.start()] + b"\x00LIT\x00")
                self._need = size
                continue
            self._parts.append(line[:-2])
            parts, self._parts, self._size = self._parts, [], 0
            return _parse(parts)


def _parse(parts: list[bytes | tuple[bytes]]) -> Response:
    literals = [p[0] for p in parts if isinstance(p, tuple)]
    text = b"".join(p for p in parts if isinstance(p, bytes))
    head, _, rest = text.partition(b" ")
    tag = head.decode("ascii", "replace")
    if tag == "+":
        return Response("+", text=rest.decode("utf-8", "replace"))
    if not tag:
        raise ProtocolError("empty response")
    word, _, rest2 = rest.partition(b" ")
    number = None
    if word.isdigit() and tag == "*":
        number = int(word)
        word, _, rest2 = rest2.partition(b" ")
    kind = word.decode("ascii", "replace").upper()
    resp = Response(tag, kind, number)
    if kind in ("OK", "NO", "BAD", "BYE", "PREAUTH"):
        body = rest2.decode("utf-8", "replace")
        if body.startswith("["):
            close = body.find("]")
            if close > 0:
                resp.code, body = body[1:close], body[close + 1:].lstrip()
        resp.text = body.replace("\x00LIT\x00", "")
        return resp
    resp.data = Tokenizer(rest2, literals).tokens()
    return resp


class Tokenizer:
    def __init__(self, text: bytes, literals: list[bytes]) -> None:
        self.text = text
        self.pos = 0
        self.literals = literals
        self.count = 0

    def tokens(self) -> list:
        out = self._list(0, top=True)
        return out

    def _list(self, depth: int, top: bool = False) -> list:
        if depth > MAX_DEPTH:
            raise ProtocolError("lists nested too deeply")
        items: list = []
        t = self.text
        while self.pos < len(t):
            c = t[self.pos:self.pos + 1]
            self.count += 1
            if self.count > MAX_TOKENS:
                raise ProtocolError("too many tokens")
            if c == b" ":
                self.pos += 1
            elif c == b"(":
                self.pos += 1
                items.append(self._list(depth + 1))
            elif c == b")":
                self.pos += 1
                if top:
                    raise ProtocolError("unbalanced parenthesis")
                return items
            elif c == b'"':
                items.append(self._quoted())
            elif t.startswith(b"\x00LIT\x00", self.pos):
                self.pos += 5
                if not self.literals:
                    raise ProtocolError("literal marker without literal")
                items.append(self.literals.pop(0))
            else:
                items.append(self._atom())
        if not top:
            raise ProtocolError("unterminated list")
        return items

    def _quoted(self) -> str:
        t = self.text
        i = self.pos + 1
        out = bytearray()
        while i < len(t):
            c = t[i]
            if c == 0x5C and i + 1 < len(t):  # backslash
                out.append(t[i + 1])
                i += 2
            elif c == 0x22:
                self.pos = i + 1
                return out.decode("utf-8", "replace")
            else:
                out.append(c)
                i += 1
        raise ProtocolError("unterminated quoted string")

    def _atom(self) -> str | None:
        t = self.text
        start = i = self.pos
        depth = 0
        while i < len(t):
            c = t[i]
            if c == 0x5B:  # [
                depth += 1
            elif c == 0x5D:  # ]
                depth = max(0, depth - 1)
            elif depth == 0 and c in b' ()"\x00':
                break
            i += 1
        if i == start:
            raise ProtocolError(f"unexpected byte {t[i:i + 1]!r}")
        self.pos = i
        atom = t[start:i].decode("utf-8", "replace")
        return None if atom.upper() == "NIL" else atom


# --- commands -------------------------------------------------------------------------------------

_ATOM_SAFE = re.compile(r"[!#$&'+,\-./0-9:;<=>?@A-Z\[\]^_`a-z|}~]+")


def quote(value: str) -> bytes:
    """An astring: an atom when safe, else a quoted string; CR, LF and NUL cannot be sent."""
    if any(ch in value for ch in "\r\n\x00"):
        raise ValueError("CR, LF and NUL cannot be sent in an IMAP string")
    if value and _ATOM_SAFE.fullmatch(value):
        return value.encode()
    return b'"' + value.replace("\\", "\\\\").replace('"', '\\"').encode("utf-8") + b'"'


def encode_mailbox(name: str) -> str:
    """Modified UTF-7 (RFC 3501 5.1.3) for mailbox names with non-ASCII characters."""
    return encode_mutf7(name)


def sasl_plain(username: str, password: str) -> str:
    return base64.b64encode(b"\x00" + username.encode() + b"\x00" + password.encode()).decode()


def fetch_items(data: list) -> dict[str, object]:
    """``* n FETCH (UID 5 BODY[] {..})`` data -> {"UID": "5", "BODY[]": b"..."}."""
    if not data or not isinstance(data[0], list):
        return {}
    items = data[0]
    out: dict[str, object] = {}
    for i in range(0, len(items) - 1, 2):
        key = items[i]
        if isinstance(key, str):
            out[key.upper()] = items[i + 1]
    return out
