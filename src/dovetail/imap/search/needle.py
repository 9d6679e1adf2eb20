"""Substring tests of SEARCH strings, including a string cut out of a message mid-character.

imaptest cuts search words out of messages at byte offsets, so a literal may start or end inside a
UTF-8 character. The parser keeps the broken bytes at such an edge as surrogate escapes (U+DC80 to
U+DCFF, Python's ``surrogateescape``), and such a string is compared as UTF-8 bytes against the
folded text, as Dovecot compares its folded strings: the cut tail of a decomposed "Ü" (the bytes of
U+0308) still finds "Übersicht". A whole string compares as characters, as it always did.
"""

from __future__ import annotations

from collections.abc import Callable


def _escaped(ch: str) -> bool:
    return "\udc80" <= ch <= "\udcff"


def is_cut(needle: str) -> bool:
    """Does ``needle`` start or end with bytes of a character cut in two?"""
    return bool(needle) and (_escaped(needle[0]) or _escaped(needle[-1]))


def needle_bytes(needle: str) -> bytes:
    """``needle`` as the UTF-8 bytes it stands for, the cut bytes at its edges as they came."""
    return needle.encode("utf-8", "surrogateescape")


def finder(needle: str) -> Callable[[str], bool]:
    """``hay -> needle in hay``, for a folded ``needle`` and folded texts."""
    if not is_cut(needle):
        return lambda hay: needle in hay
    raw = needle_bytes(needle)
    return lambda hay: raw in hay.encode("utf-8", "surrogatepass")


def contains(hay: str, needle: str) -> bool:
    """``needle in hay``, with :func:`finder`'s meaning for a cut ``needle``."""
    if not is_cut(needle):
        return needle in hay
    return needle_bytes(needle) in hay.encode("utf-8", "surrogatepass")
