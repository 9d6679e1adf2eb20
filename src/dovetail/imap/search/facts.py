"""SEARCH over the index facts alone: no object per message for the keys clients send most.

A message's facts are the tuple ``(uid, flags, internal date as a POSIX timestamp, RFC822.SIZE, modseq,
recent)`` the store keeps per view; flags, sets, sizes, modseqs, internal dates and header fields (through
a lookup the caller gives) decide a key here. The answers are those of :mod:`.match`, whose set ranges
and header folding this shares.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Callable

from dovetail.imap._searchkeys_headers import fold_case
from dovetail.imap.search.keys import (
    Age,
    All,
    And,
    Date,
    Flag,
    Header,
    ModSeq,
    Not,
    Or,
    SearchContext,
    SearchKey,
    SeqSet,
    Size,
)
from dovetail.imap.search.match import ADDRESS_HEADERS, folded_addresses, folded_header, seq_ranges
from dovetail.imap.search.needle import finder, is_cut

Facts = tuple  # (uid, flags, internal date as a POSIX timestamp, RFC822.SIZE, modseq, recent)
FactPred = Callable[[int, Facts], bool]
HeaderLookup = Callable[[str, int], list[str]]


def compile_facts(key: SearchKey, ctx: SearchContext, header: HeaderLookup) -> FactPred | None:
    """A predicate over ``(seq, facts)`` for ``key`` when flags, sets, sizes, modseqs, internal dates
    and header fields decide it (the searches clients send most), or None when it needs more (SENTxxx,
    BODY, TEXT): then evaluate with :func:`.match.compile_key` over message objects. ``header(name, uid)``
    gives the raw values of a field. Same answers as :func:`.match.compile_key`, without one object per
    message."""
    if isinstance(key, All):
        return lambda seq, f: True
    if isinstance(key, Flag):
        return _fact_flag(key.flag, key.present)
    if isinstance(key, SeqSet):
        if key.seqset.saved:
            saved = ctx.saved or frozenset()
            return lambda seq, f: f[0] in saved
        star = ctx.max_uid if key.uid else ctx.max_seq
        if not star:
            return lambda seq, f: False
        los, his = seq_ranges(key.seqset, star)
        right = bisect.bisect_right
        if key.uid:
            def in_uids(seq: int, f: Facts) -> bool:
                i = right(los, f[0]) - 1
                return i >= 0 and f[0] <= his[i]
            return in_uids

        def in_seqs(seq: int, f: Facts) -> bool:
            i = right(los, seq) - 1
            return i >= 0 and seq <= his[i]
        return in_seqs
    if isinstance(key, Size):
        n = key.n
        return (lambda seq, f: f[3] > n) if key.larger else (lambda seq, f: f[3] < n)
    if isinstance(key, ModSeq):
        ms = key.modseq
        return lambda seq, f: f[4] >= ms
    if isinstance(key, Age):
        now = ctx.now or dt.datetime.now(dt.UTC)
        limit = (now - dt.timedelta(seconds=key.seconds)).timestamp()
        return (lambda seq, f: f[2] <= limit) if key.older else (lambda seq, f: f[2] > limit)
    if isinstance(key, Date):
        if key.sent:
            return None
        start = dt.datetime.combine(key.date, dt.time(), dt.UTC).timestamp()
        end = start + 86400
        if key.op == "before":
            return lambda seq, f: f[2] < start
        if key.op == "on":
            return lambda seq, f: start <= f[2] < end
        return lambda seq, f: f[2] >= start
    if isinstance(key, Header):
        name, needle = key.name, fold_case(key.value)
        if not needle:
            return lambda seq, f: bool(header(name, f[0]))
        folded = folded_addresses if name in ADDRESS_HEADERS else folded_header
        if is_cut(needle):
            found = finder(needle)
            return lambda seq, f: any(found(folded(v)) for v in header(name, f[0]))
        return lambda seq, f: any(needle in folded(v) for v in header(name, f[0]))
    if isinstance(key, Not):
        inner = compile_facts(key.key, ctx, header)
        return None if inner is None else (lambda seq, f: not inner(seq, f))
    if isinstance(key, Or):
        left, right_p = compile_facts(key.left, ctx, header), compile_facts(key.right, ctx, header)
        if left is None or right_p is None:
            return None
        a, b = (right_p, left) if isinstance(key.left, Header) else (left, right_p)  # headers last
        return lambda seq, f: a(seq, f) or b(seq, f)
    if isinstance(key, And):
        ordered = sorted(key.keys, key=lambda k: isinstance(k, Header))  # headers last
        preds: list[FactPred] = []
        for k in ordered:
            pred = compile_facts(k, ctx, header)
            if pred is None:
                return None
            preds.append(pred)
        if len(preds) == 1:
            return preds[0]
        if len(preds) == 2:
            p1, p2 = preds
            return lambda seq, f: p1(seq, f) and p2(seq, f)
        return lambda seq, f: all(p(seq, f) for p in preds)
    return None


def _fact_flag(flag: str, present: bool) -> FactPred:
    if flag.lower() == "\\recent":
        return (lambda seq, f: f[5]) if present else (lambda seq, f: not f[5])
    low = flag.lower()
    memo: dict[frozenset[str], bool] = {}  # a mailbox has few distinct flag sets

    def has(flags: frozenset[str]) -> bool:
        hit = memo.get(flags)
        if hit is None:
            hit = memo[flags] = flag in flags or any(x.lower() == low for x in flags)
        return hit

    return (lambda seq, f: has(f[1])) if present else (lambda seq, f: not has(f[1]))

