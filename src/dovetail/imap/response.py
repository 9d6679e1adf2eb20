"""Encoding of IMAP response data: strings (quoted or literal), nested lists, flags and dates."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

_MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
_MONTH_NUM = {m.upper(): i + 1 for i, m in enumerate(_MONTHS)}


def string(value: bytes | str, utf8: bool = False) -> bytes:
    """A string as a quoted string when it can be one, else as a literal."""
    if isinstance(value, str):
        value = value.encode("utf-8", "surrogateescape")
    if len(value) < 1024 and not any(b < 0x20 or b == 0x7F for b in value) and (
        utf8 and _is_utf8(value) or value.isascii()
    ):
        return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d}\r\n" % len(value) + value


_ASTRING_CHARS = frozenset(
    b"!#$&'+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[]^_`abcdefghijklmnopqrstuvwxyz|}~"
)


def astring(value: bytes | str, utf8: bool = False) -> bytes:
    """An atom when every character allows it (mailbox names as Dovecot sends them), else a string."""
    raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
    if raw and len(raw) < 256 and raw.upper() != b"NIL" and all(b in _ASTRING_CHARS for b in raw):
        return raw
    return string(raw, utf8)


def literal(value: bytes, binary: bool = False) -> bytes:
    return (b"~{%d}\r\n" if binary else b"{%d}\r\n") % len(value) + value


def nstring(value: bytes | str | None, utf8: bool = False) -> bytes:
    return b"NIL" if value is None else string(value, utf8)


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def encode(value: Any, utf8: bool = False) -> bytes:
    """Nested lists of str/bytes/int/None as IMAP data (ENVELOPE, BODYSTRUCTURE)."""
    if value is None:
        return b"NIL"
    if isinstance(value, bool):
        return b"1" if value else b"0"
    if isinstance(value, int):
        return str(value).encode()
    if isinstance(value, bytes | str):
        return string(value, utf8)
    if isinstance(value, list | tuple):
        return b"(" + b" ".join(encode(v, utf8) for v in value) + b")"
    raise TypeError(f"cannot encode {type(value).__name__} as IMAP data")


def flag_list(flags: Iterable[str]) -> bytes:
    return ("(" + " ".join(sorted(flags, key=_flag_order)) + ")").encode("ascii", "replace")


def _flag_order(flag: str) -> tuple[int, str]:
    return (0 if flag.startswith("\\") else 1, flag)


def imap_date(dt: datetime) -> str:
    """INTERNALDATE form: ``28-Nov-2026 15:38:53 +0000``."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    off = dt.utcoffset() or timedelta(0)
    minutes = int(off.total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    minutes = abs(minutes)
    return (f"{dt.day:02d}-{_MONTHS[dt.month - 1]}-{dt.year:04d} "
            f"{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d} {sign}{minutes // 60:02d}{minutes % 60:02d}")


def parse_date_time(text: str) -> datetime:
    """APPEND date-time ``" 7-Feb-1994 21:52:25 -0800"``; raises ValueError."""
    text = text.strip()
    date, _, rest = text.partition(" ")
    clock, _, zone = rest.partition(" ")
    day, mon, year = date.split("-")
    hh, mm, ss = clock.split(":")
    if len(zone) != 5 or zone[0] not in "+-" or not zone[1:].isdigit():
        raise ValueError("bad zone")
    off = timedelta(hours=int(zone[1:3]), minutes=int(zone[3:5]))
    tz = timezone(-off if zone[0] == "-" else off)
    return datetime(int(year), _MONTH_NUM[mon.upper()], int(day), int(hh), int(mm), int(ss), tzinfo=tz)


def parse_date(text: str) -> datetime:
    """SEARCH date ``1-Feb-1994`` (a day, no time)."""
    day, mon, year = text.split("-")
    return datetime(int(year), _MONTH_NUM[mon.upper()], int(day))
