"""SEARCH responses: ``* SEARCH``, ``* ESEARCH`` (RFC 4731), what SAVE keeps and the MODSEQ reported."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from dovetail.imap.search.keys import SearchableMessage
from dovetail.imap.sequence import format_ordered, format_set


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
                   modseq: int | None = None, *, partial: tuple[int, int] | None = None,
                   ordered: bool = False) -> str | None:
    """``* ESEARCH (TAG "a1") UID MIN 2 MAX 9 COUNT 3 ALL 2,5,9`` (RFC 4731), or None for SAVE alone.

    ``results`` are the matching numbers in ascending order, or in sort order with ``ordered`` (ESORT,
    RFC 5267: MIN and MAX are then the first and last in that order, and ALL keeps it); ``partial``
    the positions ``RETURN (PARTIAL lo:hi)`` asked for; ``modseq`` the highest mod-sequence of the
    messages reported (RFC 7162 §3.1.5), given only when the search used MODSEQ.
    """
    opts = {o.upper() for o in options} or {"ALL"}
    if opts == {"SAVE"}:
        return None
    nums = list(results) if ordered else sorted(set(results))
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
        line += f" ALL {format_ordered(nums) if ordered else format_set(nums)}"
    if partial is not None:
        lo, hi = partial
        window = nums[lo - 1 : hi]
        line += f" PARTIAL ({lo}:{hi} {format_ordered(window) if window else 'NIL'})"
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
