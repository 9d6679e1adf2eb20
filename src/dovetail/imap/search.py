"""IMAP SEARCH: parse the keys (RFC 3501/9051, CONDSTORE, SEARCHRES, ESEARCH, WITHIN), evaluate them.

Pure functions over a small message protocol: the server adapts its messages to
``SearchableMessage`` and calls ``parse_search`` then ``evaluate``; nothing here does I/O.

Evaluation compiles the key tree into predicates and orders the operands of every AND/OR by cost,
so flags, sequence sets, sizes and dates decide first, headers next, and a message's body text is
only asked for when nothing cheaper has already decided.
"""

from __future__ import annotations

import bisect
import datetime as dt
import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from dovetail.imap._searchkeys_headers import (
    decode_words,
    fold_case,
    parse_date_header,
    unfold,
)
from dovetail.imap.parser import Atom, ListToken, ParseError, String
from dovetail.imap.sequence import SequenceSet, format_set

MAX_DEPTH = 50
"""Deepest nesting of parentheses, NOT and OR in one search program."""
MAX_KEYS = 5000
"""Most search keys in one program."""
SUPPORTED_CHARSETS = ("UTF-8", "US-ASCII")
RETURN_OPTIONS = frozenset({"MIN", "MAX", "ALL", "COUNT", "SAVE"})


@runtime_checkable
class SearchableMessage(Protocol):
    """What SEARCH, SORT and THREAD read of a message; the server adapts its messages to this."""

    seq: int
    uid: int
    flags: frozenset[str]  # system flags (\\Seen, \\Recent, ...) and keywords
    internal_date: dt.datetime  # timezone-aware
    size: int  # RFC822.SIZE
    modseq: int

    def header(self, name: str) -> list[str]:
        """Raw values of every field called ``name`` (case-insensitive), unfolded, in order."""
        ...

    def header_bytes(self) -> bytes:
        """The whole raw header block."""
        ...

    def text(self) -> str:
        """Decoded body text (all text parts), for BODY and TEXT; may be slow, the server caches."""
        ...


class SearchError(Exception):
    """A SEARCH/SORT/THREAD command the server must refuse with ``status`` (BAD or NO)."""

    def __init__(self, text: str, *, status: str = "BAD", code: str | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.status = status
        self.code = code

    def response(self, tag: str) -> str:
        """The tagged response line without CRLF."""
        code = f"[{self.code}] " if self.code else ""
        return f"{tag} {self.status} {code}{self.text}"


def _bad_charset(name: str) -> SearchError:
    return SearchError(f"Unsupported charset {name[:40]}", status="NO",
                       code="BADCHARSET (" + " ".join(SUPPORTED_CHARSETS) + ")")


# -- the key tree -------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class All:
    pass


@dataclass(frozen=True, slots=True)
class Flag:
    flag: str  # "\\Seen" ... or a keyword
    present: bool = True


@dataclass(frozen=True, slots=True)
class SeqSet:
    """A sequence set of message numbers (``uid=False``) or UIDs; ``$`` when ``seqset.saved``."""

    seqset: SequenceSet
    uid: bool = False


@dataclass(frozen=True, slots=True)
class Header:
    name: str  # lower case
    value: str  # as given; "" matches any message that has the field


@dataclass(frozen=True, slots=True)
class Body:
    value: str


@dataclass(frozen=True, slots=True)
class Text:
    value: str


@dataclass(frozen=True, slots=True)
class Date:
    sent: bool  # Date: header instead of the internal date
    op: str  # "before", "on", "since"
    date: dt.date


@dataclass(frozen=True, slots=True)
class Size:
    larger: bool
    n: int


@dataclass(frozen=True, slots=True)
class Age:
    """RFC 5032 OLDER/YOUNGER: internal date relative to the time of the search."""

    older: bool
    seconds: int


@dataclass(frozen=True, slots=True)
class ModSeq:
    modseq: int
    entry: str | None = None
    entry_type: str | None = None


@dataclass(frozen=True, slots=True)
class Not:
    key: SearchKey


@dataclass(frozen=True, slots=True)
class Or:
    left: SearchKey
    right: SearchKey


@dataclass(frozen=True, slots=True)
class And:
    keys: tuple[SearchKey, ...]


SearchKey = All | Flag | SeqSet | Header | Body | Text | Date | Size | Age | ModSeq | Not | Or | And


def iter_keys(key: SearchKey) -> Iterator[SearchKey]:
    """Every node of a key tree (no recursion: trees can be deep)."""
    stack = [key]
    while stack:
        k = stack.pop()
        yield k
        if isinstance(k, Not):
            stack.append(k.key)
        elif isinstance(k, Or):
            stack.extend((k.left, k.right))
        elif isinstance(k, And):
            stack.extend(k.keys)


@dataclass(frozen=True)
class SearchRequest:
    """A parsed SEARCH: ``charset, key = parse_search(args)`` unpacks the two RFC 3501 parts."""

    charset: str | None
    key: SearchKey
    returns: frozenset[str] | None = None  # ESEARCH RETURN options; None without RETURN

    def __iter__(self) -> Iterator[object]:
        yield self.charset
        yield self.key

    @property
    def uses_modseq(self) -> bool:
        """A MODSEQ key was given: the response must carry ``(MODSEQ n)`` (RFC 7162 §3.1.5)."""
        return any(isinstance(k, ModSeq) for k in iter_keys(self.key))

    @property
    def uses_saved(self) -> bool:
        return any(isinstance(k, SeqSet) and k.seqset.saved for k in iter_keys(self.key))


# -- parsing ------------------------------------------------------------------------------------------

_SIMPLE_FLAGS = {
    "ANSWERED": Flag("\\Answered"), "UNANSWERED": Flag("\\Answered", False),
    "DELETED": Flag("\\Deleted"), "UNDELETED": Flag("\\Deleted", False),
    "DRAFT": Flag("\\Draft"), "UNDRAFT": Flag("\\Draft", False),
    "FLAGGED": Flag("\\Flagged"), "UNFLAGGED": Flag("\\Flagged", False),
    "SEEN": Flag("\\Seen"), "UNSEEN": Flag("\\Seen", False),
    "RECENT": Flag("\\Recent"), "OLD": Flag("\\Recent", False),
    "NEW": And((Flag("\\Recent"), Flag("\\Seen", False))),
    "ALL": All(),
}
_STRING_KEYS = {"BCC": "bcc", "CC": "cc", "FROM": "from", "SUBJECT": "subject", "TO": "to"}
_DATE_KEYS = {
    "BEFORE": (False, "before"), "ON": (False, "on"), "SINCE": (False, "since"),
    "SENTBEFORE": (True, "before"), "SENTON": (True, "on"), "SENTSINCE": (True, "since"),
}
_MONTHS = {m: i for i, m in enumerate(
    ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), 1)}
_ENTRY_TYPES = {"PRIV", "SHARED", "ALL"}

# Simple token form: str = atom, bytes = quoted string or literal, list = parenthesised list.
_Tok = str | bytes | list


def normalize_token(tok: object, depth: int = 0) -> _Tok:
    """A parser token (``Atom``/``String``/``ListToken``) or plain token in the plain form."""
    if depth > MAX_DEPTH:
        raise SearchError("Search program nested too deeply")
    if isinstance(tok, Atom):
        return tok.value
    if isinstance(tok, String):
        return tok.value
    if isinstance(tok, str):
        return tok
    if isinstance(tok, bytes | bytearray | memoryview):
        return bytes(tok)
    if isinstance(tok, ListToken):
        return [normalize_token(t, depth + 1) for t in tok.items]
    if isinstance(tok, list | tuple):
        return [normalize_token(t, depth + 1) for t in tok]
    raise SearchError("Invalid search argument")


class _KeyParser:
    def __init__(self, toks: list[_Tok], charset: str) -> None:
        self.toks = toks
        self.i = 0
        self.charset = charset
        self.count = 0

    def more(self) -> bool:
        return self.i < len(self.toks)

    def take(self) -> _Tok:
        if self.i >= len(self.toks):
            raise SearchError("Missing search argument")
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def atom(self, what: str) -> str:
        tok = self.take()
        if not isinstance(tok, str):
            raise SearchError(f"Expected {what}")
        return tok

    def string(self) -> str:
        tok = self.take()
        if isinstance(tok, list):
            raise SearchError("Expected a string")
        try:
            raw = tok.encode("utf-8") if isinstance(tok, str) else tok
            return raw.decode("ascii" if self.charset == "US-ASCII" else "utf-8")
        except UnicodeError:
            raise SearchError(f"Search string is not valid {self.charset}") from None

    def number(self, *, bits: int = 32, nz: bool = False) -> int:
        text = self.atom("a number")
        if not text.isascii() or not text.isdigit() or len(text) > 20:
            raise SearchError("Expected a number")
        value = int(text)
        if value >= 1 << bits or nz and value == 0:
            raise SearchError("Number out of range")
        return value

    def date(self) -> dt.date:
        tok = self.take()
        if isinstance(tok, list):
            raise SearchError("Expected a date")
        text = tok if isinstance(tok, str) else tok.decode("ascii", "replace")
        parts = text.split("-")
        if (len(parts) != 3 or not text.isascii() or not parts[0].isdigit() or not 1 <= len(parts[0]) <= 2
                or parts[1].upper() not in _MONTHS or not parts[2].isdigit() or len(parts[2]) != 4):
            raise SearchError("Invalid date, expected d-Mon-yyyy")
        try:
            return dt.date(int(parts[2]), _MONTHS[parts[1].upper()], int(parts[0]))
        except ValueError:
            raise SearchError("Invalid date") from None

    def seqset(self, text: str, uid: bool) -> SeqSet:
        try:
            return SeqSet(SequenceSet.parse(text), uid)
        except ParseError as exc:
            raise SearchError(exc.text) from None

    def keys_until_end(self, depth: int) -> SearchKey:
        keys = []
        while self.more():
            keys.append(self.key(depth))
        if not keys:
            raise SearchError("Missing search key")
        return keys[0] if len(keys) == 1 else And(tuple(keys))

    def key(self, depth: int) -> SearchKey:
        if depth > MAX_DEPTH:
            raise SearchError("Search program nested too deeply")
        self.count += 1
        if self.count > MAX_KEYS:
            raise SearchError("Too many search keys")
        tok = self.take()
        if isinstance(tok, list):
            sub = _KeyParser(tok, self.charset)
            sub.count = self.count
            key = sub.keys_until_end(depth + 1)
            self.count = sub.count
            return key
        if isinstance(tok, bytes):
            raise SearchError("Expected a search key, got a string")
        name = tok.upper()
        if name in _SIMPLE_FLAGS:
            return _SIMPLE_FLAGS[name]
        if name in _STRING_KEYS:
            return Header(_STRING_KEYS[name], self.string())
        if name in _DATE_KEYS:
            sent, op = _DATE_KEYS[name]
            return Date(sent, op, self.date())
        if name == "BODY":
            return Body(self.string())
        if name == "TEXT":
            return Text(self.string())
        if name == "HEADER":
            field = self.string()
            if not field or any(c in field for c in ": \t\r\n") or not field.isascii():
                raise SearchError("Invalid header field name")
            return Header(field.lower(), self.string())
        if name in ("KEYWORD", "UNKEYWORD"):
            flag = self.atom("a keyword")
            if not flag or "*" in flag or "%" in flag:
                raise SearchError("Invalid keyword")
            return Flag(flag, name == "KEYWORD")
        if name in ("LARGER", "SMALLER"):
            return Size(name == "LARGER", self.number())
        if name in ("OLDER", "YOUNGER"):
            return Age(name == "OLDER", self.number(nz=True))
        if name == "NOT":
            return Not(self.key(depth + 1))
        if name == "OR":
            left = self.key(depth + 1)
            return Or(left, self.key(depth + 1))
        if name == "UID":
            return self.seqset(self.atom("a UID set"), True)
        if name == "MODSEQ":
            return self.modseq()
        if name[:1] in "0123456789*$" and name[:1]:
            return self.seqset(tok, False)
        raise SearchError(f"Unknown search key {tok[:40]}")

    def modseq(self) -> ModSeq:
        entry = entry_type = None
        if self.more() and isinstance(self.toks[self.i], bytes):
            entry = self.string()
            if not entry.startswith("/flags/") or len(entry) > 200:
                raise SearchError("Invalid MODSEQ entry name")
            entry_type = self.atom("an entry type").upper()
            if entry_type not in _ENTRY_TYPES:
                raise SearchError("Invalid MODSEQ entry type")
        return ModSeq(self.number(bits=63), entry, entry_type)


def _parse_returns(tok: _Tok) -> frozenset[str]:
    if not isinstance(tok, list):
        raise SearchError("RETURN needs a parenthesised list")
    opts = set()
    for item in tok:
        if not isinstance(item, str) or item.upper() not in RETURN_OPTIONS:
            raise SearchError("Unknown RETURN option")
        opts.add(item.upper())
    return frozenset(opts or {"ALL"})


def parse_search(args: Iterable[object], *, allow_return: bool = True) -> SearchRequest:
    """``[RETURN (opts)] [CHARSET name] key...`` as tokens → a ``SearchRequest``.

    Tokens are the IMAP parser's ``Atom``/``String``/``ListToken`` or the plain form (``str`` atom,
    ``bytes`` string, ``list``). Raises ``SearchError`` and nothing else.
    """
    toks = [normalize_token(t) for t in args]
    i = 0
    returns = None
    if allow_return and toks and isinstance(toks[0], str) and toks[0].upper() == "RETURN":
        if len(toks) < 2:
            raise SearchError("RETURN needs options")
        returns = _parse_returns(toks[1])
        i = 2
    charset = None
    if i < len(toks) and isinstance(toks[i], str) and toks[i].upper() == "CHARSET":
        if i + 1 >= len(toks) or isinstance(toks[i + 1], list):
            raise SearchError("CHARSET needs a name")
        charset = check_charset(toks[i + 1])
        i += 2
    parser = _KeyParser(toks[i:], charset or "UTF-8")
    return SearchRequest(charset, parser.keys_until_end(0), returns)


def check_charset(tok: object) -> str:
    """The canonical name of a supported search charset, or ``NO [BADCHARSET ...]``."""
    tok = normalize_token(tok)
    if isinstance(tok, list):
        raise SearchError("Expected a charset name")
    name = tok if isinstance(tok, str) else tok.decode("ascii", "replace")
    upper = name.upper()
    if upper in ("UTF-8", "UTF8"):
        return "UTF-8"
    if upper in ("US-ASCII", "ASCII"):
        return "US-ASCII"
    raise _bad_charset(name)


def parse_keys(toks: Sequence[object], charset: str) -> SearchKey:
    """Search keys alone (after SORT/THREAD's own arguments) → a key tree."""
    return _KeyParser([normalize_token(t) for t in toks], charset).keys_until_end(0)


# -- evaluation ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SearchContext:
    """What a search needs besides the messages."""

    uid: bool = False  # return UIDs (UID SEARCH) instead of sequence numbers
    saved: frozenset[int] | None = None  # the SEARCHRES saved result, as UIDs
    max_seq: int | None = None  # "*" for sequence numbers; default: the last message given
    max_uid: int | None = None  # "*" for UIDs; default: the highest UID given
    now: dt.datetime | None = None  # for OLDER/YOUNGER; default: the current time


Pred = Callable[[SearchableMessage], bool]

_CHEAP, _HEADER, _BODY = 0, 1, 2


@functools.lru_cache(maxsize=16384)
@functools.lru_cache(maxsize=65536)
def _folded_header(value: str) -> str:
    """Decoded and case-folded; remembered, as the same From/Subject values come back search after search."""
    return fold_case(decode_words(value))


@functools.lru_cache(maxsize=4096)
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


def _has_flag(msg: SearchableMessage, flag: str) -> bool:
    if flag in msg.flags:
        return True
    low = flag.lower()
    return any(f.lower() == low for f in msg.flags)


def _ranges(seqset: SequenceSet, star: int) -> tuple[list[int], list[int]]:
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
        los, his = _ranges(key.seqset, star)
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
        return _BODY, lambda m: needle in fold_case(m.text())
    if isinstance(key, Text):
        needle = fold_case(key.value)

        def text_pred(m: SearchableMessage) -> bool:
            head = decode_words(unfold(m.header_bytes().decode("utf-8", "replace")))
            return needle in fold_case(head) or needle in fold_case(m.text())
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
        return cost, lambda m: all(p(m) for p in preds)
    raise TypeError(f"not a search key: {key!r}")


def _header_pred(name: str, needle: str) -> Pred:
    if not needle:
        return lambda m: bool(m.header(name))
    return lambda m: any(needle in _folded_header(v) for v in m.header(name))


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


# -- the fast path: keys decided by the index facts alone ---------------------------------------------

Facts = tuple  # (uid, flags, internal date as a POSIX timestamp, RFC822.SIZE, modseq, recent)
FactPred = Callable[[int, Facts], bool]
HeaderLookup = Callable[[str, int], list[str]]


def compile_facts(key: SearchKey, ctx: SearchContext, header: HeaderLookup) -> FactPred | None:
    """A predicate over ``(seq, facts)`` for ``key`` when flags, sets, sizes, modseqs, internal dates
    and header fields decide it (the searches clients send most), or None when it needs more (SENTxxx,
    BODY, TEXT): then evaluate with :func:`compile_key` over message objects. ``header(name, uid)``
    gives the raw values of a field. Same answers as :func:`compile_key`, without one object per
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
        los, his = _ranges(key.seqset, star)
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
        folded = _folded_header
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
        preds = [compile_facts(k, ctx, header) for k in ordered]
        if any(p is None for p in preds):
            return None
        if len(preds) == 1:
            return preds[0]
        if len(preds) == 2:
            p1, p2 = preds
            return lambda seq, f: p1(seq, f) and p2(seq, f)
        return lambda seq, f: all(p(seq, f) for p in preds)  # type: ignore[misc]
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


# -- responses ----------------------------------------------------------------------------------------

def format_search(nums: Iterable[int], modseq: int | None = None) -> str:
    """``* SEARCH 2 3 5`` (with ``(MODSEQ n)`` after a CONDSTORE search that found something)."""
    nums = list(nums)
    line = "* SEARCH" + "".join(f" {n}" for n in nums)
    if modseq is not None and nums:
        line += f" (MODSEQ {modseq})"
    return line


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_esearch(tag: str | None, uid: bool, results: Iterable[int], options: Iterable[str],
                   modseq: int | None = None) -> str | None:
    """``* ESEARCH (TAG "a1") UID MIN 2 MAX 9 COUNT 3 ALL 2,5,9`` (RFC 4731), or None for SAVE alone.

    ``results`` are the matching numbers in ascending order; ``modseq`` the highest mod-sequence of the
    messages reported (RFC 7162 §3.1.5), given only when the search used MODSEQ.
    """
    opts = {o.upper() for o in options} or {"ALL"}
    if opts == {"SAVE"}:
        return None
    nums = sorted(set(results))
    line = "* ESEARCH"
    if tag is not None:
        line += f" (TAG {_quote(tag)})"
    if uid:
        line += " UID"
    if nums:
        if "MIN" in opts:
            line += f" MIN {nums[0]}"
        if "MAX" in opts:
            line += f" MAX {nums[-1]}"
    if "COUNT" in opts:
        line += f" COUNT {len(nums)}"
    if nums and "ALL" in opts:
        line += f" ALL {format_set(nums)}"
    if modseq is not None and nums:
        line += f" MODSEQ {modseq}"
    return line


def reported(messages: Sequence[SearchableMessage], options: Iterable[str] | None
             ) -> list[SearchableMessage]:
    """The matching messages an ESEARCH reports (MIN/MAX only: just those two; else all).

    Also what SAVE keeps (RFC 5182 §2.4) and what the MODSEQ of the response covers.
    """
    opts = {o.upper() for o in options} if options is not None else {"ALL"}
    if not messages or opts & {"ALL", "COUNT"} or not opts & {"MIN", "MAX"}:
        return list(messages)
    ordered = sorted(messages, key=lambda m: m.seq)
    out = []
    if "MIN" in opts:
        out.append(ordered[0])
    if "MAX" in opts and (not out or ordered[-1] is not out[0]):
        out.append(ordered[-1])
    return out


def saved_result(messages: Sequence[SearchableMessage], options: Iterable[str]) -> frozenset[int]:
    """The UIDs a ``RETURN (SAVE ...)`` search keeps for ``$``."""
    return frozenset(m.uid for m in reported(messages, options))


def highest_modseq(messages: Iterable[SearchableMessage]) -> int | None:
    return max((m.modseq for m in messages), default=None)
