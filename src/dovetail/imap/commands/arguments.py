"""Arguments several commands share: mailbox names, flag lists, sequence sets of the selected view."""

from __future__ import annotations

from dovetail.imap.commands.context import CommandSession
from dovetail.imap.response import astring as astring_out
from dovetail.imap.sequence import SequenceSet
from dovetail.imap.state import CommandError
from dovetail.imap.tokens import Atom, ParseError, Token, astring
from dovetail.imap.typed import parse_flags as parse_flags
from dovetail.storage.names import decode_mutf7, encode_mutf7


def mailbox_arg(s: CommandSession, tok: Token) -> str:
    """A mailbox name argument: UTF-8 once enabled, modified UTF-7 otherwise."""
    return mailbox_name(s, astring(tok))


def mailbox_name(s: CommandSession, raw: bytes) -> str:
    """A mailbox name as the client sent it, decoded: UTF-8 once enabled, modified UTF-7 otherwise."""
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


def resolve(s: CommandSession, tok: Token, uid: bool) -> list[int]:
    """A sequence set (or ``$``) as the UIDs of the selected view, ascending."""
    sel = s.selected
    assert sel is not None
    if not isinstance(tok, Atom):
        raise ParseError("Expected a sequence set")
    return resolve_set(s, SequenceSet.parse(tok.value), uid)


def resolve_set(s: CommandSession, ss: SequenceSet, uid: bool) -> list[int]:
    """A parsed sequence set (or ``$``) as the UIDs of the selected view, ascending."""
    sel = s.selected
    assert sel is not None
    uids = sel.mailbox.uids
    if ss.saved:
        saved = sel.saved or frozenset()
        return sorted(u for u in uids if u in saved)
    if uid:
        return ss.select(uids if isinstance(uids, list) else list(uids))
    n = len(uids)
    ranges = ss.ranges
    if n == 0 and any(lo is None or hi is None for lo, hi in ranges):
        return []  # "1:*" in an empty mailbox names nothing; clients send it blindly
    if len(ranges) == 1:
        (a, b), = ss.bounds(n)
        if b > n:
            raise CommandError("Invalid messageset", status="BAD")
        return list(uids[a - 1 : b])  # the view's UIDs are ascending and unique
    # Sequence numbers (1-based) of the set, in one list: single numbers (most of a scattered set)
    # as they are, ranges spelt out once they are known to lie within the view.
    seqs: list[int] = []
    for lo, hi in ranges:
        if lo == hi and lo is not None:
            seqs.append(lo)
            continue
        a = n if lo is None else lo
        b = n if hi is None else hi
        if a > b:
            a, b = b, a
        if b > n:
            raise CommandError("Invalid messageset", status="BAD")
        seqs.extend(range(a, b + 1))
    if not seqs:
        return []  # a set built with no ranges at all names nothing
    if max(seqs) > n:
        raise CommandError("Invalid messageset", status="BAD")
    return [uids[i - 1] for i in sorted(set(seqs))]
