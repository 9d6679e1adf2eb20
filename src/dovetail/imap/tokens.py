"""One IMAP command's bytes → ``Command``: the tag, the name and a token tree; helpers that read arguments.

The framing (lines, literals, size limits) is :mod:`dovetail.imap.parser`'s job; it hands each complete
command here as its line segments and literals. Hand-written for the reason the parser gives.

Tokens: ``Atom`` (also numbers, NIL, flags, sequence sets and fetch items such as
``BODY.PEEK[HEADER.FIELDS (FROM)]<0.100>`` — brackets are kept inside the atom), ``String``
(quoted string or literal, raw bytes) and ``ListToken`` (a parenthesised list).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Atom:
    value: str

    def upper(self) -> str:
        return self.value.upper()


@dataclass(frozen=True)
class String:
    value: bytes
    literal: bool = False
    binary: bool = False  # literal8 (~{n}), RFC 3516

    def text(self) -> str:
        return self.value.decode("utf-8", "surrogateescape")


@dataclass(frozen=True)
class ListToken:
    items: tuple[Token, ...]


Token = Atom | String | ListToken


@dataclass(frozen=True)
class Command:
    tag: str
    name: str  # upper case; "FETCH" for both FETCH and UID FETCH
    args: tuple[Token, ...]
    uid: bool = False
    size: int = 0  # bytes on the wire, lines and literals


class ParseError(Exception):
    """A command does not follow the grammar; the text goes into the BAD response."""

    def __init__(self, text: str, code: str | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.code = code


TAG_RE = re.compile(rb"[\x21\x23\x24\x26\x27\x2c-\x5b\x5d-\x7a\x7c\x7e]+")
_ATOM_STOP = frozenset(b' ()"{') | frozenset(range(0x00, 0x20)) | {0x7F}
_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9-]*$")


def parse_command(chunks: list[bytes | String], size: int = 0) -> Command:
    """Turn the segments of one command (lines and literals) into a ``Command``."""
    tokens = _Tokenizer(chunks).parse()
    first = chunks[0] if chunks else b""
    if not isinstance(first, bytes) or not first:
        raise ParseError("Missing tag")
    m = TAG_RE.match(first)
    if not m or len(m.group()) > 64:
        raise ParseError("Invalid tag")
    if not tokens or not isinstance(tokens[0], Atom) or tokens[0].value != m.group().decode():
        raise ParseError("Invalid tag")
    tag = tokens[0].value
    if len(tokens) < 2 or not isinstance(tokens[1], Atom):
        raise ParseError("Missing command name")
    name = tokens[1].value.upper()
    if not _NAME_RE.match(name):
        raise ParseError("Invalid command name")
    args = tuple(tokens[2:])
    uid = False
    if name == "UID":
        if not args or not isinstance(args[0], Atom) or not _NAME_RE.match(args[0].value):
            raise ParseError("UID needs a command")
        name = args[0].value.upper()
        args = args[1:]
        uid = True
    return Command(tag, name, args, uid, size)


class _Tokenizer:
    def __init__(self, chunks: list[bytes | String]) -> None:
        self.chunks = chunks

    def parse(self) -> list[Token]:
        stack: list[list[Token]] = [[]]
        for chunk in self.chunks:
            if isinstance(chunk, String):
                stack[-1].append(chunk)
                continue
            self._line(chunk, stack)
        if len(stack) != 1:
            raise ParseError("Unbalanced parentheses")
        return stack[0]

    def _line(self, data: bytes, stack: list[list[Token]]) -> None:
        i, n = 0, len(data)
        while i < n:
            c = data[i]
            if c == 0x20:
                i += 1
            elif c == 0x28:  # (
                if len(stack) > 32:
                    raise ParseError("Lists nested too deeply")
                stack.append([])
                i += 1
            elif c == 0x29:  # )
                if len(stack) == 1:
                    raise ParseError("Unbalanced parentheses")
                items = stack.pop()
                stack[-1].append(ListToken(tuple(items)))
                i += 1
            elif c == 0x22:  # "
                value, i = _quoted(data, i)
                stack[-1].append(String(value))
            elif c in _ATOM_STOP:
                if c == 0x7B:
                    raise ParseError("Literal not at the end of a line")
                raise ParseError("Invalid character in command")
            else:
                name, i = _atom(data, i)
                stack[-1].append(Atom(name))


def _quoted(data: bytes, i: int) -> tuple[bytes, int]:
    out = bytearray()
    i += 1
    n = len(data)
    while i < n:
        c = data[i]
        if c == 0x22:
            return bytes(out), i + 1
        if c == 0x5C:
            if i + 1 >= n or data[i + 1] not in (0x22, 0x5C):
                raise ParseError("Invalid escape in quoted string")
            out.append(data[i + 1])
            i += 2
            continue
        if c == 0 or c == 0x0D or c == 0x0A:
            raise ParseError("Invalid character in quoted string")
        out.append(c)
        i += 1
    raise ParseError("Unterminated quoted string")


_ATOM_RUN = re.compile(rb'[^ ()"{\x00-\x1f\x7f\x80-\xff\[]*')
"""The plain characters of an atom up to the next one that needs a look (a FETCH's sequence set of a
hundred numbers is hundreds of characters, one loop turn each before)."""


def _atom(data: bytes, i: int) -> tuple[str, int]:
    start = i
    n = len(data)
    while True:
        i = _ATOM_RUN.match(data, i).end()  # type: ignore[union-attr]  # matches the empty string
        if i >= n:
            break
        c = data[i]
        if c == 0x5B:  # [ : a section; spaces, lists and quoted strings may appear inside
            end = _section_end(data, i)
            # No closing bracket: "[" is an ordinary ATOM-CHAR (a mailbox may be called "a[b").
            i = end if end > 0 else i + 1
            continue
        if c >= 0x80:
            raise ParseError("8-bit character outside a string")
        break
    return data[start:i].decode("ascii"), i


def _section_end(data: bytes, i: int) -> int:
    """Index after the ``]`` closing the section opened at ``i``; -1 when none closes it."""
    depth = 0
    i += 1
    n = len(data)
    while i < n:
        c = data[i]
        if c == 0x22:
            _value, i = _quoted(data, i)
            continue
        if c == 0x28:
            depth += 1
        elif c == 0x29:
            depth -= 1
            if depth < 0:
                return -1
        elif c == 0x5D and depth == 0:
            return i + 1
        elif c < 0x20 or c >= 0x7F:
            return -1
        i += 1
    return -1


# -- helpers for command handlers --------------------------------------------------------------------


def astring(tok: Token) -> bytes:
    """An astring argument (atom, quoted or literal) as bytes."""
    if isinstance(tok, String):
        return tok.value
    if isinstance(tok, Atom) and not any(c in tok.value for c in ' ()"'):
        return tok.value.encode("ascii")
    raise ParseError("Expected a string")


def nstring(tok: Token) -> bytes | None:
    if isinstance(tok, Atom) and tok.value.upper() == "NIL":
        return None
    return astring(tok)


def number(tok: Token, *, nz: bool = False, bits: int = 32) -> int:
    if not isinstance(tok, Atom) or not tok.value.isdigit() or not tok.value.isascii():
        raise ParseError("Expected a number")
    value = int(tok.value)
    if value >= 1 << bits or nz and value == 0:
        raise ParseError("Number out of range")
    return value


def atom(tok: Token) -> str:
    if not isinstance(tok, Atom):
        raise ParseError("Expected an atom")
    return tok.value


def plist(tok: Token) -> tuple[Token, ...]:
    if not isinstance(tok, ListToken):
        raise ParseError("Expected a parenthesised list")
    return tok.items
