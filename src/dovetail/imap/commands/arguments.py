"""Arguments several commands share: mailbox names, flag lists, sequence sets of the selected view."""

from __future__ import annotations

from dovetail.imap.commands.context import CommandSession
from dovetail.imap.response import astring as astring_out
from dovetail.imap.sequence import SequenceSet
from dovetail.imap.state import CommandError
from dovetail.imap.tokens import Atom, ParseError, Token, astring
from dovetail.storage.api import SYSTEM_FLAGS
from dovetail.storage.names import decode_mutf7, encode_mutf7

_FLAG_NAMES = {f.upper(): f for f in SYSTEM_FLAGS}


def mailbox_arg(s: CommandSession, tok: Token) -> str:
    """A mailbox name argument: UTF-8 once enabled, modified UTF-7 otherwise."""
    raw = astring(tok)
    if s.utf8:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CommandError("Mailbox name is not valid UTF-8", "CANNOT") from exc
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        try:
            return raw.decode("utf-8")  # 8-bit names from clients that skip mUTF-7
        except UnicodeDecodeError as exc:
            raise CommandError("Mailbox name is not valid UTF-8", "CANNOT") from exc
    try:
        return decode_mutf7(text)
    except ValueError as exc:
        raise CommandError("Invalid modified UTF-7 in mailbox name", "CANNOT") from exc


def mailbox_out(s: CommandSession, name: str) -> bytes:
    return astring_out(name if s.utf8 else encode_mutf7(name), s.utf8)


def parse_flags(tokens: tuple[Token, ...] | list[Token]) -> list[str]:
    """Flags of APPEND/STORE: system flags canonicalised, keywords as atoms; ``\\Recent`` refused."""
    out = []
    for tok in tokens:
        if not isinstance(tok, Atom):
            raise ParseError("Flags must be atoms")
        value = tok.value
        if value.startswith("\\"):
            canon = _FLAG_NAMES.get(value.upper())
            if canon is None:
                if value.upper() == "\\RECENT":
                    raise ParseError("\\Recent can't be set")
                raise ParseError(f"Invalid system flag {value[:40]}")
            out.append(canon)
        else:
            if any(c in value for c in "[]%*") or len(value) > 250:
                raise ParseError(f"Invalid keyword {value[:40]}")
            out.append(value)
    return out


def resolve(s: CommandSession, tok: Token, uid: bool) -> list[int]:
    """A sequence set (or ``$``) as the UIDs of the selected view, ascending."""
    sel = s.selected
    assert sel is not None
    if not isinstance(tok, Atom):
        raise ParseError("Expected a sequence set")
    ss = SequenceSet.parse(tok.value)
    uids = sel.mailbox.uids
    if ss.saved:
        saved = sel.saved or frozenset()
        return sorted(u for u in uids if u in saved)
    if uid:
        return ss.select(list(uids))
    n = len(uids)
    out: set[int] = set()
    if n == 0 and any(lo is None or hi is None for lo, hi in ss.ranges):
        return []  # "1:*" in an empty mailbox names nothing; clients send it blindly
    for lo, hi in ss.ranges:
        for v in (lo, hi):
            if v is not None and v > n:
                raise CommandError("Invalid messageset", status="BAD")
    for a, b in ss.bounds(n):
        out.update(uids[i - 1] for i in range(max(a, 1), min(b, n) + 1))
    return sorted(out)
