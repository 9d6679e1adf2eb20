"""Sans-I/O IMAP command parser: bytes in, events out (the h11 shape).

``CommandParser.feed(data)`` buffers bytes; ``next_event()`` returns the next event or ``None`` when
more bytes are needed.  Events are ``Command`` (a tag, a command name and a token tree),
``BadCommand`` (a tagged or untagged error; the parser has already skipped the rest of the bad
command, literals included), ``ContinuationRequest`` (the client waits for ``+`` before sending a
synchronising literal) and ``Line`` (a raw line, asked for with ``expect_line()`` for AUTHENTICATE
responses and IDLE's ``DONE``).

Hand-written because no maintained library parses IMAP *commands* (imaplib and imapclient parse
responses); it has to be incremental, so literals, LITERAL+ and per-state size limits are handled
as the bytes arrive.

This module does the framing; :mod:`dovetail.imap.tokens` turns each complete command into its token
tree. The token types, ``Command``, ``ParseError`` and the argument helpers are importable from here
too, as everything a command reader needs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from dovetail.imap.limits import Limits
from dovetail.imap.tokens import (
    TAG_RE,
    Atom,
    Command,
    ListToken,
    ParseError,
    String,
    Token,
    astring,
    atom,
    nstring,
    number,
    parse_command,
    plist,
)

__all__ = [
    "CommandParser", "Event", "BadCommand", "ContinuationRequest", "Line",
    "Atom", "String", "ListToken", "Token", "Command", "ParseError", "parse_command",
    "astring", "nstring", "number", "atom", "plist",
]


@dataclass(frozen=True)
class BadCommand:
    tag: str  # "*" when no tag could be read
    text: str
    code: str | None = None  # response code without brackets, e.g. "TOOBIG"
    status: str = "BAD"


@dataclass(frozen=True)
class ContinuationRequest:
    text: str = "Ready for literal data"


@dataclass(frozen=True)
class Line:
    data: bytes  # without CRLF
    too_long: bool = False


Event = Command | BadCommand | ContinuationRequest | Line

_LITERAL_RE = re.compile(rb"(~?)\{(\d{1,20})(\+?)\}$")


@dataclass
class _Pending:
    """The command being assembled: its line segments and the literals between them."""

    chunks: list[bytes | String] = field(default_factory=list)
    size: int = 0
    tag: str | None = None
    name: str | None = None


class CommandParser:
    """Incremental command reader with limits; see the module docstring."""

    def __init__(self, limits: Limits | None = None, *, literal_plus: bool = True) -> None:
        self.limits = limits or Limits()
        self.authenticated = False
        self.literal_plus = literal_plus
        self._buf = bytearray()
        self._pending = _Pending()
        self._literal: tuple[int, bool, bool] | None = None  # (remaining, binary, sync)
        self._skip_literal = 0
        self._skipping = False  # discarding the rest of a rejected command
        self._want_line = False
        self._events: list[Event] = []

    # -- input ---------------------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        self._buf += data

    def expect_line(self) -> None:
        """The next event is the next raw line (AUTHENTICATE response, IDLE's DONE)."""
        self._want_line = True

    @property
    def literal_limit(self) -> int:
        return self.limits.max_literal if self.authenticated else self.limits.max_literal_unauth

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def take_buffer(self) -> bytes:
        """The bytes received after the last complete command (what follows COMPRESS is compressed)."""
        out = bytes(self._buf)
        self._buf.clear()
        return out

    # -- output --------------------------------------------------------------------------------------

    def next_event(self) -> Event | None:
        while True:
            if self._events:
                return self._events.pop(0)
            if not self._step():
                return None

    def _step(self) -> bool:
        """Consume what the buffer allows; return False when more bytes are needed."""
        if self._skip_literal:
            if not self._buf:
                return False
            n = min(self._skip_literal, len(self._buf))
            del self._buf[:n]
            self._skip_literal -= n
            return True
        if self._literal is not None:
            return self._read_literal()
        end = self._buf.find(b"\n")
        if end < 0:
            if len(self._buf) > self.limits.max_line and not self._skipping:
                if self._want_line and not self._pending.chunks:
                    self._want_line = False
                    self._skipping = True
                    self._events.append(Line(b"", too_long=True))
                    return True
                self._reject_line_too_long()
                return True
            if self._skipping and len(self._buf) > self.limits.max_line:
                # keep the tail: it may hold the start of a literal marker
                del self._buf[: len(self._buf) - 32]
            return False
        line = bytes(self._buf[:end])
        del self._buf[: end + 1]
        if line.endswith(b"\r"):
            line = line[:-1]
        if self._want_line and not self._skipping and not self._pending.chunks:
            self._want_line = False
            if len(line) > self.limits.max_line:
                self._events.append(Line(b"", too_long=True))
                return True
            self._events.append(Line(line))
            return True
        if self._skipping:
            self._skip_after_line(line)
            return True
        self._take_line(line)
        return True

    def _reject_line_too_long(self) -> None:
        tag = self._pending.tag or _peek_tag(bytes(self._buf[:200]))
        self._events.append(BadCommand(tag, "Command line too long", "TOOBIG"))
        self._pending = _Pending()
        self._skipping = True
        self._want_line = False

    def _skip_after_line(self, line: bytes) -> None:
        m = _LITERAL_RE.search(line)
        if m and m.group(3):
            self._skip_literal = int(m.group(2))  # a LITERAL+ literal follows; discard it too
        elif not m or not m.group(3):
            self._skipping = False  # the command ends here (a sync literal is never sent after BAD)

    def _fail(self, tag: str, text: str, code: str | None = None, status: str = "BAD", *,
              skip_literal: int = 0) -> None:
        self._events.append(BadCommand(tag, text, code, status))
        self._pending = _Pending()
        if skip_literal:
            self._skip_literal = skip_literal
            self._skipping = True

    def _take_line(self, line: bytes) -> None:
        p = self._pending
        if p.tag is None:
            p.tag = _peek_tag(line)
            p.name = _peek_name(line)
        tag = p.tag
        if len(line) > self.limits.max_line:
            self._fail(tag, "Command line too long", "TOOBIG")
            m = _LITERAL_RE.search(line)
            if m and m.group(3):
                self._skip_literal = int(m.group(2))
                self._skipping = True
            return
        p.size += len(line) + 2
        m = _LITERAL_RE.search(line)
        if not m:
            p.chunks.append(line)
            self._finish()
            return
        binary, size, plus = bool(m.group(1)), int(m.group(2)), bool(m.group(3))
        p.chunks.append(line[: m.start()])
        too_big = size > self.literal_limit
        if not too_big and p.size + size > self.limits.max_command:
            too_big = True
        if plus and not self.literal_plus:
            self._fail(tag, "LITERAL+ is not supported", skip_literal=size)
            return
        if too_big:
            status = "NO" if p.name == "APPEND" and self.authenticated else "BAD"
            text = "Literal too large" if self.authenticated else "Literal too large before authentication"
            self._fail(tag, text, "TOOBIG", status, skip_literal=size if plus else 0)
            return
        p.size += size
        self._literal = (size, binary, not plus)
        if not plus:
            self._events.append(ContinuationRequest())

    def _read_literal(self) -> bool:
        assert self._literal is not None
        remaining, binary, _sync = self._literal
        if len(self._buf) < remaining:
            return False
        data = bytes(self._buf[:remaining])
        del self._buf[:remaining]
        self._literal = None
        if not binary and b"\x00" in data:
            self._fail(self._pending.tag or "*", "NUL in literal (use literal8)")
            self._skipping = True
            return True
        self._pending.chunks.append(String(data, literal=True, binary=binary))
        return True

    def _finish(self) -> None:
        p = self._pending
        self._pending = _Pending()
        tag = p.tag or "*"
        try:
            self._events.append(parse_command(p.chunks, p.size))
        except ParseError as exc:
            self._events.append(BadCommand(tag, exc.text, exc.code))


def _peek_tag(line: bytes) -> str:
    m = TAG_RE.match(line)
    if not m or len(m.group()) > 64:
        return "*"
    return m.group().decode("ascii")


def _peek_name(line: bytes) -> str | None:
    parts = line.split(b" ", 3)
    if len(parts) < 2:
        return None
    name = parts[1].upper()
    if name == b"UID" and len(parts) > 2:
        name = parts[2].upper()
    return name.decode("ascii", "replace")


