"""SEARCH over message objects: the path for every key, and the only one for SENTxxx, BODY and TEXT.

The key tree compiles into predicates over ``SearchableMessage``, and the operands of every AND/OR
are ordered by cost, so flags, sequence sets, sizes and dates decide first, headers next, and a
message's body text is only asked for when nothing cheaper has already decided.
"""

from __future__ import annotations

import bisect
import datetime as dt
import functools
from collections.abc import Callable, Sequence

from dovetail.imap._searchkeys_headers import address_text, decode_words, fold_case, parse_date_header, unfold
from dovetail.imap.search.keys import (
    Age,
    All,
    And,
    Body,
    Date,
    Flag,
    Header,
    ModSeq,
    Not,
    Or,
    SearchableMessage,
    SearchContext,
    SearchKey,
    SeqSet,
    Size,
    Text,
)
from dovetail.imap.search.needle import contains, finder, is_cut
from dovetail.imap.sequence import SequenceSet

Pred = Callable[[SearchableMessage], bool]

_CHEAP, _HEADER, _BODY = 0, 1, 2


@functools.lru_cache(maxsize=65536)
def folded_header(value: str) -> str:
    """Decoded and case-folded; remembered, as the same From/Subject values come back search after search."""
    return fold_case(decode_words(value))


@functools.lru_cache(maxsize=16384)
def folded_header_block(raw: bytes) -> str:
    """A whole header block as SEARCH TEXT compares it; remembered (by its bytes), as every TEXT
    search reads the header of every message it gets to."""
    return fold_case(decode_words(unfold(raw.decode("utf-8", "replace"))))


# As large as the other per-value caches: SENTBEFORE/SENTON/SENTSINCE read the Date of every message of
# the folder in turn, and an LRU smaller than the folder keeps nothing of such a scan (each search
# parsed 10,000 dates again).
@functools.lru_cache(maxsize=65536)
def _sent_date(value: str) -> dt.date | None:
    parsed = parse_date_header(value)
    return parsed[0] if parsed else None


_NO_DATE = dt.date(1970, 1, 1)


def message_sent_date(msg: SearchableMessage) -> dt.date:
    """The calendar date of the Date: header as written; 1 Jan 1970 when missing or unparseable.

    The fallback is Dovecot's: such a message is SENTBEFORE any date and never SENTSINCE a later one.
    """
    values = msg.header("date")
    return (_sent_date(values[0]) if values else None) or _NO_DATE


def _text_has(msg: SearchableMessage, needle: str) -> bool:
    """``needle in msg.folded_text()``, through the message's own ``text_contains`` where it has one
    (the server's answers many messages from one pass over its store)."""
    own = getattr(msg, "text_contains", None)
    return own(needle) if own is not None else contains(msg.folded_text(), needle)


def _has_flag(msg: SearchableMessage, flag: str) -> bool:
    if flag in msg.flags:
        return True
    low = flag.lower()
    return any(f.lower() == low for f in msg.flags)


def seq_ranges(seqset: SequenceSet, star: int) -> tuple[list[int], list[int]]:
    merged: list[list[int]] = []
    for a, b in sorted(seqset.bounds(star)):
        if merged and a <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [a for a, _ in merged], [b for _, b in merged]


def _compile(key: SearchKey, msgs: Sequence[SearchableMessage], ctx: SearchContext) -> tuple[int, Pred]:
    if isinstance(key, All):
        return _CHEAP, lambda m: True
    if isinstance(key, Flag):
        flag, present = key.flag, key.present
        return _CHEAP, (lambda m: _has_flag(m, flag)) if present else (lambda m: not _has_flag(m, flag))
    if isinstance(key, SeqSet):
        if key.seqset.saved:
            saved = ctx.saved or frozenset()
            return _CHEAP, lambda m: m.uid in saved
        if key.uid:
            star = ctx.max_uid if ctx.max_uid is not None else max((m.uid for m in msgs), default=0)
        else:
            star = ctx.max_seq if ctx.max_seq is not None else max((m.seq for m in msgs), default=0)
        if star == 0:
            return _CHEAP, lambda m: False
        los, his = seq_ranges(key.seqset, star)
        attr = "uid" if key.uid else "seq"

        def in_set(m: SearchableMessage) -> bool:
            n = getattr(m, attr)
            i = bisect.bisect_right(los, n) - 1
            return i >= 0 and n <= his[i]
        return _CHEAP, in_set
    if isinstance(key, Size):
        n = key.n
        return _CHEAP, (lambda m: m.size > n) if key.larger else (lambda m: m.size < n)
    if isinstance(key, ModSeq):
        ms = key.modseq
        return _CHEAP, lambda m: m.modseq >= ms
    if isinstance(key, Age):
        now = ctx.now or dt.datetime.now(dt.UTC)
        limit = now - dt.timedelta(seconds=key.seconds)
        return _CHEAP, (lambda m: m.internal_date <= limit) if key.older else (
            lambda m: m.internal_date > limit)
    if isinstance(key, Date):
        return _compile_date(key)
    if isinstance(key, Header):
        return _HEADER, _header_pred(key.name, fold_case(key.value))
    if isinstance(key, Body):
        needle = fold_case(key.value)
        return _BODY, lambda m: _text_has(m, needle)
    if isinstance(key, Text):
        needle = fold_case(key.value)
        in_header = finder(needle)

        def text_pred(m: SearchableMessage) -> bool:
            # The body first when the store's pass over the texts answers it (a set lookup); the
            # header block, folded, only where the body does not hold the needle.
            own = getattr(m, "text_known", None)
            known = own(needle) if own is not None else None
            if known:
                return True
            return in_header(folded_header_block(m.header_bytes())) or (known is None and _text_has(m, needle))
        return _BODY, text_pred
    if isinstance(key, Not):
        cost, inner = _compile(key.key, msgs, ctx)
        return cost, lambda m: not inner(m)
    if isinstance(key, Or):
        parts = sorted((_compile(k, msgs, ctx) for k in (key.left, key.right)), key=lambda p: p[0])
        (c1, p1), (c2, p2) = parts
        return max(c1, c2), lambda m: p1(m) or p2(m)
    if isinstance(key, And):
        parts = sorted((_compile(k, msgs, ctx) for k in key.keys), key=lambda p: p[0])
        preds = [p for _, p in parts]
        cost = max((c for c, _ in parts), default=_CHEAP)
        if len(preds) == 1:
            return cost, preds[0]
        if len(preds) == 2:  # most searches: no generator a message
            p1, p2 = preds
            return cost, lambda m: p1(m) and p2(m)
        if len(preds) == 3:
            q1, q2, q3 = preds
            return cost, lambda m: q1(m) and q2(m) and q3(m)
        return cost, lambda m: all(p(m) for p in preds)
    raise TypeError(f"not a search key: {key!r}")


ADDRESS_HEADERS = frozenset({"from", "to", "cc", "bcc", "sender", "reply-to"})
"""Header fields searched as addresses (:func:`address_text`), not as text."""


@functools.lru_cache(maxsize=65536)
def folded_addresses(value: str) -> str:
    return fold_case(address_text(value))


def _header_pred(name: str, needle: str) -> Pred:
    if not needle:
        return lambda m: bool(m.header(name))
    folded = folded_addresses if name in ADDRESS_HEADERS else folded_header
    if is_cut(needle):
        found = finder(needle)
        return lambda m: any(found(folded(v)) for v in m.header(name))
    if name in ADDRESS_HEADERS:
        return lambda m: any(needle in folded_addresses(v) for v in m.header(name))
    return lambda m: any(needle in folded_header(v) for v in m.header(name))


def _compile_date(key: Date) -> tuple[int, Pred]:
    day, op = key.date, key.op
    if key.sent:
        def sent(m: SearchableMessage) -> bool:
            return _cmp_date(message_sent_date(m), op, day)
        return _HEADER, sent
    return _CHEAP, lambda m: _cmp_date(m.internal_date.date(), op, day)


def _cmp_date(d: dt.date, op: str, day: dt.date) -> bool:
    if op == "before":
        return d < day
    if op == "on":
        return d == day
    return d >= day


def compile_key(key: SearchKey, messages: Sequence[SearchableMessage],
                context: SearchContext | None = None) -> Pred:
    """A predicate for ``key``, bound to the view (``*``) and context; reusable across messages."""
    return _compile(key, messages, context or SearchContext())[1]


def evaluate_messages(key: SearchKey, messages: Sequence[SearchableMessage],
                      context: SearchContext | None = None) -> list[SearchableMessage]:
    """The messages of ``messages`` (the current view, in sequence order) that match ``key``."""
    pred = compile_key(key, messages, context)
    return [m for m in messages if pred(m)]


def evaluate(key: SearchKey, messages: Sequence[SearchableMessage],
             context: SearchContext | None = None) -> list[int]:
    """Sequence numbers (or UIDs when ``context.uid``) of the matching messages, ascending."""
    ctx = context or SearchContext()
    found = evaluate_messages(key, messages, ctx)
    nums = [m.uid for m in found] if ctx.uid else [m.seq for m in found]
    nums.sort()
    return nums

