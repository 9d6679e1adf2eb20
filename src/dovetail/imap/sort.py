"""IMAP SORT (RFC 5256) with DISPLAYFROM/DISPLAYTO (RFC 5957), over ``SearchableMessage``s.

Sort values are computed here from raw headers, once per message and criterion: base subjects
(RFC 5256 §2.1), first-address local parts, display names and sent dates in UTC. Strings compare
with i;unicode-casemap; messages equal under every criterion keep sequence-number order.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from dovetail.imap._searchkeys_headers import base_subject, collate, first_display, first_mailbox, parse_date_header
from dovetail.imap.search import (
    SearchableMessage,
    SearchError,
    SearchKey,
    check_charset,
    normalize_token,
    parse_keys,
    parse_returns,
)

SORT_KEYS = ("ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM", "DISPLAYTO")
MAX_CRITERIA = 20


@dataclass(frozen=True)
class SortCriterion:
    key: str  # one of SORT_KEYS
    reverse: bool = False


@dataclass(frozen=True)
class SortRequest:
    criteria: tuple[SortCriterion, ...]
    charset: str
    key: SearchKey
    returns: frozenset[str] | None = None  # ESORT (RFC 5267) RETURN options; None: a plain SORT
    partial: tuple[int, int] | None = None


def parse_sort(args: Iterable[object]) -> SortRequest:
    """``(criteria) charset search-keys`` tokens → ``SortRequest``; raises ``SearchError`` only."""
    toks = [normalize_token(t) for t in args]
    returns = partial = None
    if len(toks) >= 2 and isinstance(toks[0], str) and toks[0].upper() == "RETURN":
        returns, partial = parse_returns(toks[1])
        if "SAVE" in returns:
            raise SearchError("SORT cannot SAVE")
        toks = toks[2:]
    if len(toks) < 3:
        raise SearchError("SORT needs sort criteria, a charset and search keys")
    crit = toks[0]
    if not isinstance(crit, list) or not crit:
        raise SearchError("Expected a parenthesised list of sort criteria")
    if len(crit) > MAX_CRITERIA * 2:
        raise SearchError("Too many sort criteria")
    criteria: list[SortCriterion] = []
    reverse = False
    for item in crit:
        if not isinstance(item, str):
            raise SearchError("Invalid sort criterion")
        name = item.upper()
        if name == "REVERSE":
            if reverse:
                raise SearchError("REVERSE REVERSE")
            reverse = True
            continue
        if name not in SORT_KEYS:
            raise SearchError(f"Unknown sort criterion {item[:40]}")
        criteria.append(SortCriterion(name, reverse))
        reverse = False
    if reverse or not criteria:
        raise SearchError("REVERSE must be followed by a sort key")
    charset = check_charset(toks[1])
    return SortRequest(tuple(criteria), charset, parse_keys(toks[2:], charset), returns, partial)


# -- sort values ----------------------------------------------------------------------------------------

def _first(msg: SearchableMessage, name: str) -> str | None:
    values = msg.header(name)
    return values[0] if values else None


def sent_datetime(msg: SearchableMessage) -> dt.datetime:
    """The Date: header in UTC, or the internal date when it is missing or unparseable."""
    parsed = parse_date_header(_first(msg, "date"))
    if parsed is not None:
        return parsed[1]
    return msg.internal_date.astimezone(dt.UTC)


def subject_key(msg: SearchableMessage) -> str:
    return collate(base_subject(_first(msg, "subject") or "")[0])


def _mailbox(header: str) -> Callable[[SearchableMessage], str]:
    def value(msg: SearchableMessage) -> str:
        return collate(first_mailbox(msg.header(header)))
    return value


def _display(header: str) -> Callable[[SearchableMessage], str]:
    def value(msg: SearchableMessage) -> str:
        return collate(first_display(msg.header(header)))
    return value


SortValue = dt.datetime | int | str
"""What one criterion yields for a message: one type per criterion, so values always compare."""

_VALUES: dict[str, Callable[[SearchableMessage], SortValue]] = {
    "ARRIVAL": lambda m: m.internal_date.astimezone(dt.UTC),
    "DATE": sent_datetime,
    "SIZE": lambda m: m.size,
    "SUBJECT": subject_key,
    "FROM": _mailbox("from"),
    "TO": _mailbox("to"),
    "CC": _mailbox("cc"),
    "DISPLAYFROM": _display("from"),
    "DISPLAYTO": _display("to"),
}


def sort_messages(criteria: Sequence[SortCriterion], messages: Iterable[SearchableMessage]
                  ) -> list[SearchableMessage]:
    """``messages`` in SORT order (stable passes from the last criterion to the first)."""
    out = sorted(messages, key=lambda m: m.seq)
    for crit in reversed(criteria):
        out.sort(key=_VALUES[crit.key], reverse=crit.reverse)
    return out


def sort(criteria: Sequence[SortCriterion], messages: Iterable[SearchableMessage], uid: bool = False
         ) -> list[int]:
    """Sequence numbers (UIDs when ``uid``) in SORT order."""
    return [m.uid if uid else m.seq for m in sort_messages(criteria, messages)]


def format_sort(nums: Iterable[int], modseq: int | None = None) -> str:
    """``* SORT 5 3 4`` (and ``(MODSEQ n)`` after a CONDSTORE sort that found something)."""
    nums = list(nums)
    line = "* SORT" + "".join(f" {n}" for n in nums)
    if modseq is not None and nums:
        line += f" (MODSEQ {modseq})"
    return line
