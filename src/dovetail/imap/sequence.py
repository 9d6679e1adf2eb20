"""IMAP sequence sets (``1:*``, ``2,4:7``, ``$``): parsing, resolving against a mailbox, compact forms."""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from dovetail.imap.tokens import ParseError

_SEQ_RE = re.compile(r"^(\d+|\*)(?::(\d+|\*))?$")
_MAX = 2**32 - 1


@dataclass(frozen=True)
class SequenceSet:
    """Ranges with ``None`` standing for ``*``; ``saved`` means ``$`` (SEARCHRES)."""

    ranges: tuple[tuple[int | None, int | None], ...] = ()
    saved: bool = False

    @classmethod
    def parse(cls, text: str) -> SequenceSet:
        if text == "$":
            return cls((), saved=True)
        if not text or len(text) > 100_000:
            raise ParseError("Invalid sequence set")
        ranges: list[tuple[int | None, int | None]] = []
        for part in text.split(","):
            # A client's set of a hundred scattered numbers is mostly single numbers: those skip the regex.
            if part.isdecimal():
                value = int(part)
                if value == 0 or value > _MAX:
                    raise ParseError("Invalid sequence number")
                ranges.append((value, value))
                continue
            m = _SEQ_RE.match(part)
            if not m:
                raise ParseError("Invalid sequence set")
            lo = _num(m.group(1))
            hi = _num(m.group(2)) if m.group(2) is not None else lo
            ranges.append((lo, hi))
        return cls(tuple(ranges))

    @classmethod
    def from_numbers(cls, numbers: Iterable[int]) -> SequenceSet:
        return cls(tuple((a, b) for a, b in _compress(sorted(set(numbers)))))

    def bounds(self, star: int) -> Iterator[tuple[int, int]]:
        """Each range as (low, high), ``*`` replaced by ``star`` (the largest number in use)."""
        for lo, hi in self.ranges:
            a = star if lo is None else lo
            b = star if hi is None else hi
            if a > b:
                a, b = b, a
            yield a, b

    def contains(self, n: int, star: int) -> bool:
        return any(a <= n <= b for a, b in self.bounds(star))

    def select(self, values: Sequence[int]) -> list[int]:
        """The members of sorted ``values`` (UIDs or sequence numbers) within this set."""
        if not values:
            return []
        star = values[-1]
        out: set[int] = set()
        for a, b in self.bounds(star):
            i = bisect.bisect_left(values, a)
            j = bisect.bisect_right(values, b)
            out.update(values[i:j])
        return sorted(out)

    def __str__(self) -> str:
        if self.saved:
            return "$"
        parts = []
        for lo, hi in self.ranges:
            a = "*" if lo is None else str(lo)
            b = "*" if hi is None else str(hi)
            parts.append(a if a == b else f"{a}:{b}")
        return ",".join(parts)


def _num(text: str) -> int | None:
    if text == "*":
        return None
    value = int(text)
    if value == 0 or value > _MAX:
        raise ParseError("Invalid sequence number")
    return value


def _compress(values: list[int]) -> Iterator[tuple[int, int]]:
    if not values:
        return
    start = prev = values[0]
    for v in values[1:]:
        if v == prev + 1:
            prev = v
            continue
        yield start, prev
        start = prev = v
    yield start, prev


def format_ordered(numbers: Iterable[int]) -> str:
    """A sequence-set that keeps the given order (ESORT's ALL, PARTIAL of a SORT, RFC 5267): runs of
    consecutive ascending numbers become ``a:b``, so ``[5, 3, 4, 2]`` is ``5,3:4,2``."""
    out: list[str] = []
    start = prev = None
    for n in numbers:
        if prev is not None and n == prev + 1:
            prev = n
            continue
        if start is not None:
            out.append(str(start) if start == prev else f"{start}:{prev}")
        start = prev = n
    if start is not None:
        out.append(str(start) if start == prev else f"{start}:{prev}")
    return ",".join(out)


def format_set(numbers: Iterable[int]) -> str:
    """Compact ``1:3,7`` form, as used in COPYUID, ESEARCH ALL and VANISHED."""
    return str(SequenceSet.from_numbers(numbers))


def missing_ranges(known: SequenceSet | None, present: list[int], star: int) -> str:
    """The UIDs of ``known`` (or 1..star) that are not ``present`` (sorted), as a compact set.

    Computed range by range, so a client naming ``1:4294967295`` costs no more than the mailbox size.
    """
    ranges = sorted(known.bounds(star)) if known is not None else [(1, star)]
    out: list[str] = []
    for a, b in ranges:
        i = bisect.bisect_left(present, a)
        cur = a
        while cur <= b:
            nxt = present[i] if i < len(present) else None
            if nxt is None or nxt > b:
                out.append(str(cur) if cur == b else f"{cur}:{b}")
                break
            if nxt > cur:
                out.append(str(cur) if cur == nxt - 1 else f"{cur}:{nxt - 1}")
            cur = nxt + 1
            i += 1
        if len(out) > 100_000:
            break
    return ",".join(out)
