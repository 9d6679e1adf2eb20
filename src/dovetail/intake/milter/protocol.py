"""The milter protocol (Sendmail's libmilter, version 6, as Postfix speaks it), without any I/O.

Every packet is a 4-byte big-endian length (counting the command byte), one command byte and its
data. This module encodes what an MTA sends (option negotiation, macros, connect, helo, envelope,
headers, body chunks, end of message) and decodes what a filter answers into typed responses. No
library on PyPI speaks the MTA side of the protocol (the ones there implement filters), so it is
written here; the byte layouts follow libmilter's ``mfdef.h``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

VERSION = 6
CHUNK = 65535  # MILTER_CHUNK_SIZE: the largest body packet
MAX_PACKET = 1 << 20  # a reply longer than this is garbage (we never allow body replacement)

# MTA -> filter commands
ABORT, BODY, CONNECT, MACRO, BODYEOB, HELO = b"A", b"B", b"C", b"D", b"E", b"H"
HEADER, MAIL, EOH, OPTNEG, QUIT, RCPT, DATA = b"L", b"M", b"N", b"O", b"Q", b"R", b"T"

# Actions a filter may ask for at end of message (SMFIF_*)
ADDHDRS, CHGBODY, ADDRCPT, DELRCPT, CHGHDRS, QUARANTINE, CHGFROM = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40

# Protocol steps a filter may leave out or not answer (SMFIP_*)
NOCONNECT, NOHELO, NOMAIL, NORCPT, NOBODY, NOHDRS, NOEOH = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40
NR_HDR, NOUNKNOWN, NODATA, SKIP, RCPT_REJ = 0x80, 0x100, 0x200, 0x400, 0x800
NR_CONN, NR_HELO, NR_MAIL, NR_RCPT, NR_DATA, NR_UNKN, NR_EOH, NR_BODY = (
    0x1000, 0x2000, 0x4000, 0x8000, 0x10000, 0x20000, 0x40000, 0x80000)

ACTIONS_OFFERED = ADDHDRS | CHGHDRS | QUARANTINE
STEPS_OFFERED = (NOCONNECT | NOHELO | NOMAIL | NORCPT | NOBODY | NOHDRS | NOEOH | NR_HDR | NOUNKNOWN | NODATA
                 | SKIP | NR_CONN | NR_HELO | NR_MAIL | NR_RCPT | NR_DATA | NR_UNKN | NR_EOH | NR_BODY)


class ProtocolError(Exception):
    """The filter sent something that is not a milter reply we can act on."""


def packet(command: bytes, data: bytes = b"") -> bytes:
    return struct.pack(">I", len(data) + 1) + command + data


def _cstrings(*parts: str | bytes) -> bytes:
    out = bytearray()
    for part in parts:
        raw = part.encode("utf-8", "surrogateescape") if isinstance(part, str) else part
        out += raw.replace(b"\0", b" ") + b"\0"
    return bytes(out)


def optneg(actions: int = ACTIONS_OFFERED, steps: int = STEPS_OFFERED) -> bytes:
    return packet(OPTNEG, struct.pack(">III", VERSION, actions, steps))


def macros(stage: bytes, values: dict[str, str]) -> bytes:
    return packet(MACRO, stage + _cstrings(*(x for kv in values.items() for x in kv)))


def connect(hostname: str, address: str, port: int) -> bytes:
    if ":" in address:
        family = b"6"
    elif address.startswith("/"):
        return packet(CONNECT, _cstrings(hostname) + b"L" + struct.pack(">H", 0) + _cstrings(address))
    else:
        family = b"4"
    return packet(CONNECT, _cstrings(hostname) + family + struct.pack(">H", port & 0xFFFF) + _cstrings(address))


def helo(name: str) -> bytes:
    return packet(HELO, _cstrings(name))


def mail(sender: str, args: list[str] | None = None) -> bytes:
    return packet(MAIL, _cstrings(f"<{sender}>", *(args or [])))


def rcpt(recipient: str, args: list[str] | None = None) -> bytes:
    return packet(RCPT, _cstrings(f"<{recipient}>", *(args or [])))


def header(name: str | bytes, value: str | bytes) -> bytes:
    return packet(HEADER, _cstrings(name, value))


def body_chunks(body: bytes) -> list[bytes]:
    return [packet(BODY, body[i:i + CHUNK]) for i in range(0, len(body), CHUNK)]


# -- replies -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Negotiated:
    version: int
    actions: int
    steps: int


@dataclass(frozen=True)
class Simple:
    """continue, accept, reject, tempfail, discard, skip or progress."""

    kind: str


@dataclass(frozen=True)
class ReplyCode:
    code: int
    status: str
    text: str


@dataclass(frozen=True)
class HeaderEdit:
    """add (``index`` unused), insert at ``index`` (0 = top), change the ``index``-th (1-based) field
    called ``name`` (an empty value deletes it)."""

    op: str
    name: str
    value: str
    index: int = 0


@dataclass(frozen=True)
class Quarantine:
    reason: str


Response = Negotiated | Simple | ReplyCode | HeaderEdit | Quarantine

_SIMPLE = {b"c": "continue", b"a": "accept", b"r": "reject", b"t": "tempfail", b"d": "discard", b"s": "skip",
           b"p": "progress"}


def _fields(data: bytes, count: int) -> list[str]:
    parts = data.split(b"\0")
    if len(parts) < count + 1 or any(parts[count:]):
        raise ProtocolError(f"expected {count} NUL-terminated string(s)")
    return [p.decode("utf-8", "replace") for p in parts[:count]]


def _header_name(name: str) -> str:
    if not name or any(c in name for c in ":\r\n ") or not name.isprintable():
        raise ProtocolError(f"bad header name {name!r}")
    return name


def _header_value(value: str) -> str:
    if "\r" in value or "\0" in value:
        value = value.replace("\r", "")
    lines = value.split("\n")
    if any(line and not line[0].isspace() for line in lines[1:]):
        raise ProtocolError("header value continues without folding whitespace")
    return value


def parse_reply_code(text: str) -> ReplyCode:
    parts = text.split(" ", 2)
    if len(parts[0]) != 3 or not parts[0].isdigit() or parts[0][0] not in "45":
        raise ProtocolError(f"bad SMTP reply from filter: {text[:60]!r}")
    code = int(parts[0])
    status, rest = "", ""
    if len(parts) > 1:
        maybe = parts[1]
        if maybe[:1] == parts[0][0] and maybe.count(".") == 2 and all(x.isdigit() for x in maybe.split(".")):
            status, rest = maybe, parts[2] if len(parts) > 2 else ""
        else:
            rest = " ".join(parts[1:])
    if not status:
        status = "5.7.1" if code >= 500 else "4.7.1"
    return ReplyCode(code, status, " ".join(rest.split()) or "Message refused by content filter")


def decode_response(command: bytes, data: bytes) -> Response:
    """One filter reply as a typed value; ``ProtocolError`` for anything else."""
    if command in _SIMPLE:
        if data:
            raise ProtocolError(f"reply {command!r} carries data")
        return Simple(_SIMPLE[command])
    if command == OPTNEG:
        if len(data) < 12:
            raise ProtocolError("short option negotiation")
        version, actions, steps = struct.unpack(">III", data[:12])
        return Negotiated(version, actions, steps)
    if command == b"y":
        (text,) = _fields(data, 1)
        return parse_reply_code(text)
    if command == b"h":
        name, value = _fields(data, 2)
        return HeaderEdit("add", _header_name(name), _header_value(value))
    if command in (b"i", b"m"):
        if len(data) < 4:
            raise ProtocolError("short header edit")
        (index,) = struct.unpack(">I", data[:4])
        name, value = _fields(data[4:], 2)
        return HeaderEdit("insert" if command == b"i" else "change", _header_name(name), _header_value(value), index)
    if command == b"q":
        (reason,) = _fields(data, 1)
        return Quarantine(reason)
    raise ProtocolError(f"unexpected filter reply {command!r}")


class Decoder:
    """Splits the filter's byte stream into (command, data) packets."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        self._buf += data
        out: list[tuple[bytes, bytes]] = []
        while len(self._buf) >= 4:
            (size,) = struct.unpack(">I", self._buf[:4])
            if size == 0 or size > MAX_PACKET:
                raise ProtocolError(f"bad packet length {size}")
            if len(self._buf) < 4 + size:
                break
            out.append((bytes(self._buf[4:5]), bytes(self._buf[5:4 + size])))
            del self._buf[:4 + size]
        return out

    @property
    def pending(self) -> int:
        return len(self._buf)
