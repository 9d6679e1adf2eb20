"""SEARCH arguments → key tree (RFC 3501/9051, CONDSTORE, SEARCHRES, ESEARCH RETURN, WITHIN).

Works on the IMAP parser's tokens or a plain form of them (SORT and THREAD parse their own arguments
first and hand the rest here); raises ``SearchError`` and nothing else.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence

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
    SearchError,
    SearchKey,
    SearchRequest,
    SeqSet,
    Size,
    Text,
)
from dovetail.imap.sequence import SequenceSet
from dovetail.imap.tokens import Atom, ListToken, ParseError, String

MAX_DEPTH = 50
"""Deepest nesting of parentheses, NOT and OR in one search program."""
MAX_KEYS = 5000
"""Most search keys in one program."""
SUPPORTED_CHARSETS = ("UTF-8", "US-ASCII")
RETURN_OPTIONS = frozenset({"MIN", "MAX", "ALL", "COUNT", "SAVE", "PARTIAL", "UPDATE", "CONTEXT"})
_PARTIAL = re.compile(r"^([1-9][0-9]{0,9}):([1-9][0-9]{0,9})$")


def _bad_charset(name: str) -> SearchError:
    return SearchError(f"Unsupported charset {name[:40]}", status="NO",
                       code="BADCHARSET (" + " ".join(SUPPORTED_CHARSETS) + ")")


_SIMPLE_FLAGS: dict[str, SearchKey] = {
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


def _utf8_cut_words(raw: bytes) -> str:
    """``raw`` as UTF-8, where the bytes of a character cut in two at either end (imaptest cuts words
    out of messages at byte offsets) are kept as surrogate escapes, compared as bytes (see
    :mod:`~dovetail.imap.search.needle`) instead of failing the SEARCH; bytes invalid anywhere else
    still raise UnicodeDecodeError."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    start = 0
    while start < min(len(raw), 3) and 0x80 <= raw[start] <= 0xBF:  # continuation bytes of a cut character
        start += 1
    head = raw[:start].decode("utf-8", "surrogateescape")
    try:
        return head + raw[start:].decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.reason != "unexpected end of data":
            raise
        return head + raw[start:exc.start].decode("utf-8") + raw[exc.start:].decode("utf-8", "surrogateescape")


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
            if self.charset != "US-ASCII":
                return _utf8_cut_words(raw)
            return raw.decode("ascii")
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


def parse_returns(tok: _Tok) -> tuple[frozenset[str], tuple[int, int] | None]:
    """ESEARCH/ESORT ``RETURN (...)`` options, and the range of ``PARTIAL lo:hi`` (RFC 5267) if given."""
    if not isinstance(tok, list):
        raise SearchError("RETURN needs a parenthesised list")
    opts = set()
    partial = None
    items = list(tok)
    while items:
        item = items.pop(0)
        if not isinstance(item, str) or item.upper() not in RETURN_OPTIONS:
            raise SearchError("Unknown RETURN option")
        if item.upper() == "PARTIAL":
            rng = items.pop(0) if items else None
            m = _PARTIAL.match(rng) if isinstance(rng, str) else None
            if m is None or partial is not None:
                raise SearchError("PARTIAL needs one range of positions, as 1:100")
            lo, hi = sorted((int(m.group(1)), int(m.group(2))))
            if hi >= 2**32:
                raise SearchError("PARTIAL range too large")
            partial = (lo, hi)
        opts.add(item.upper())
    return frozenset(opts or {"ALL"}), partial


def parse_search(args: Iterable[object], *, allow_return: bool = True) -> SearchRequest:
    """``[RETURN (opts)] [CHARSET name] key...`` as tokens → a ``SearchRequest``.

    Tokens are the IMAP parser's ``Atom``/``String``/``ListToken`` or the plain form (``str`` atom,
    ``bytes`` string, ``list``). Raises ``SearchError`` and nothing else.
    """
    toks = [normalize_token(t) for t in args]
    i = 0
    returns = None
    partial = None
    if allow_return and toks and isinstance(toks[0], str) and toks[0].upper() == "RETURN":
        if len(toks) < 2:
            raise SearchError("RETURN needs options")
        returns, partial = parse_returns(toks[1])
        i = 2
    charset = None
    head = toks[i] if i < len(toks) else None
    if isinstance(head, str) and head.upper() == "CHARSET":
        if i + 1 >= len(toks) or isinstance(toks[i + 1], list):
            raise SearchError("CHARSET needs a name")
        charset = check_charset(toks[i + 1])
        i += 2
    parser = _KeyParser(toks[i:], charset or "UTF-8")
    return SearchRequest(charset, parser.keys_until_end(0), returns, partial)


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

