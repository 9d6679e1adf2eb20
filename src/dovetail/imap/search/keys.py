"""The SEARCH key tree, the parsed request and what a searched message must offer.

Shared by the parser, both evaluation paths (message objects and index facts), SORT and THREAD.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from dovetail.imap.sequence import SequenceSet


@runtime_checkable
class SearchableMessage(Protocol):
    """What SEARCH, SORT and THREAD read of a message; the server adapts its messages to this."""

    # Read-only: plain attributes, frozen dataclass fields and properties all qualify.
    @property
    def seq(self) -> int: ...

    @property
    def uid(self) -> int: ...

    @property
    def flags(self) -> frozenset[str]:
        """System flags (\\Seen, \\Recent, ...) and keywords."""
        ...

    @property
    def internal_date(self) -> dt.datetime:
        """Timezone-aware."""
        ...

    @property
    def size(self) -> int:
        """RFC822.SIZE."""
        ...

    @property
    def modseq(self) -> int: ...

    def header(self, name: str) -> list[str]:
        """Raw values of every field called ``name`` (case-insensitive), unfolded, in order."""
        ...

    def header_bytes(self) -> bytes:
        """The whole raw header block."""
        ...

    def text(self) -> str:
        """Decoded body text (all text parts); may be slow, the server caches."""
        ...

    def folded_text(self) -> str:
        """``fold_case(text())``, as BODY and TEXT compare it; the server may keep it folded."""
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
    partial: tuple[int, int] | None = None  # RETURN (PARTIAL lo:hi), RFC 5267: positions in the result

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


# -- what evaluation is given besides the key ---------------------------------------------------------

@dataclass(frozen=True)
class SearchContext:
    """What a search needs besides the messages."""

    uid: bool = False  # return UIDs (UID SEARCH) instead of sequence numbers
    saved: frozenset[int] | None = None  # the SEARCHRES saved result, as UIDs
    max_seq: int | None = None  # "*" for sequence numbers; default: the last message given
    max_uid: int | None = None  # "*" for UIDs; default: the highest UID given
    now: dt.datetime | None = None  # for OLDER/YOUNGER; default: the current time

