"""The messages SEARCH, SORT and THREAD read: index data at once, header fields and text on demand.

A header field is found by one regex scan of the header block the store keeps in its index (read in
one go once a search needs more than a few), and the values found are shared between searches through
the store's header cache.
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime

from dovetail.imap.search.needle import contains
from dovetail.mime.text import body_text, fold_case
from dovetail.storage.api import RECENT, Mailbox, MessageExpunged
from dovetail.storage.api import Section as StoreSection


class SearchMessage:
    """A view message as SEARCH/SORT/THREAD read it: index data now, header and text on demand."""

    __slots__ = ("seq", "uid", "flags", "_idate", "_date", "size", "modseq", "_mb", "_headers", "_hbytes",
                 "_text", "_folded", "_blocks")

    def __init__(self, mb: Mailbox, seq: int, facts: tuple[int, frozenset[str], float, int, int, bool],
                 blocks: HeaderBlocks | None = None) -> None:
        self._mb = mb
        self._blocks = blocks
        self.reset(seq, facts)

    def reset(self, seq: int, facts: tuple[int, frozenset[str], float, int, int, bool]) -> None:
        """Become another message (a search probes every message with one object and keeps only
        the ones that match)."""
        uid, flags, idate, size, modseq, recent = facts
        self.seq = seq
        self.uid = uid
        self.flags = flags | {RECENT} if recent else flags
        self._idate = idate
        self._date: datetime | None = None
        self.size = size
        self.modseq = modseq
        self._headers: dict[str, list[str]] | None = None
        self._hbytes: bytes | None = None
        self._text: str | None = None
        self._folded: str | None = None

    @property
    def internal_date(self) -> datetime:
        """Made on first use: most searches never look at dates."""
        if self._date is None:
            self._date = datetime.fromtimestamp(self._idate, UTC)
        return self._date

    def header_bytes(self) -> bytes:
        if self._hbytes is None and self._blocks is not None:
            self._hbytes = self._blocks.get(self.uid)
        if self._hbytes is None:
            try:
                self._hbytes = self._mb.get_section(self.uid, StoreSection((), "HEADER"))
            except MessageExpunged:
                self._hbytes = b""
        return self._hbytes

    def header(self, name: str) -> list[str]:
        """The values of header ``name``: only that field is looked for (most searches name one)."""
        key = name.lower()
        if self._headers is None:
            self._headers = {}
        found = self._headers.get(key)
        if found is None:
            shared = self._blocks.fields if self._blocks is not None else None
            found = shared.get((key, self.uid)) if shared is not None else None
            if found is None:
                found = _header_values(self.header_bytes(), key)
                if shared is not None:
                    shared[(key, self.uid)] = found
            self._headers[key] = found
        return found

    def text(self) -> str:
        if self._text is None:
            try:
                text = self._mb.message_text(self.uid)
                if text is None:
                    text = body_text(self._mb.open_message(self.uid))
            except MessageExpunged:
                text = body_text(b"")
            self._text = text
        return self._text

    def folded_text(self) -> str:
        if self._folded is None:
            try:
                folded = self._mb.folded_text(self.uid)
            except MessageExpunged:
                folded = fold_case(body_text(b""))
            self._folded = folded if folded is not None else fold_case(self.text())
        return self._folded

    def text_known(self, needle: str) -> bool | None:
        """Whether this message's text contains ``needle``, from the one pass over the store's texts
        this search made for it (see :meth:`HeaderBlocks.text_scan`); None when it made none yet or
        the pass could not decide this message."""
        blocks = self._blocks
        if blocks is None:
            return None
        hit = blocks.scanned(needle) or blocks.text_scan(needle)
        if hit is not None and self.uid in hit[1]:
            return self.uid in hit[0]
        return None

    def text_contains(self, needle: str) -> bool:
        """``needle in self.folded_text()``: from one pass over the store's texts once a search has
        asked this of more than a few messages (see :meth:`HeaderBlocks.text_scan`), else from the
        store's texts in memory one message at a time, else from the message itself."""
        known = self.text_known(needle)
        if known is not None:
            return known
        if self._blocks is not None:
            held = self._mb.text_has(self.uid, needle)  # the store's texts in memory: this one's alone
            if held is not None:
                return held
        return contains(self.folded_text(), needle)


_SINGLE_HEADER_READS = 32
# A search that reads more texts than this asks the store for all of them at once instead: one pass
# (over the texts it holds in memory, most often, or its rows) and a set lookup a message after it,
# where a text at a time costs a dozen calls a message. A search that cheaper keys narrowed to a few
# messages reads just theirs.
_SINGLE_TEXT_READS = 16


class HeaderBlocks:
    """The header blocks the store keeps in its index, fetched in one go the first time a search
    needs any header (most searches never do)."""

    __slots__ = ("_mb", "_blocks", "fields", "_misses", "_text_asks", "_scans")

    def __init__(self, mb: Mailbox) -> None:
        self._mb = mb
        self._misses = 0
        self._blocks: dict[int, bytes] | None = None
        self.fields = mb.header_cache()  # field values the store keeps between searches, if any
        self._text_asks: dict[str, int] = {}
        self._scans: dict[str, tuple[set[int], set[int]] | None] = {}

    def scanned(self, needle: str) -> tuple[set[int], set[int]] | None:
        """What :meth:`text_scan` found for ``needle`` in this search, if it asked the store."""
        return self._scans.get(needle)

    def text_scan(self, needle: str) -> tuple[set[int], set[int]] | None:
        """The store's ``(found, known)`` for ``needle`` (see ``Mailbox.text_matches``), asked once a
        search has read the text of more than a few messages for it (a search that cheaper keys
        narrowed to a few messages reads just theirs); None until then, or when the store cannot."""
        if needle in self._scans:
            return self._scans[needle]
        asks = self._text_asks[needle] = self._text_asks.get(needle, 0) + 1
        if asks <= _SINGLE_TEXT_READS:
            return None
        hit = self._scans[needle] = self._mb.text_matches(needle)
        return hit

    def get(self, uid: int) -> bytes | None:
        if self._blocks is None:
            self._misses += 1
            if self._misses <= _SINGLE_HEADER_READS:  # a few new messages: read just theirs
                return self._mb.cached_headers((uid,)).get(uid)
            self._blocks = self._mb.cached_headers(self._mb.uids)
        return self._blocks.get(uid)

    def values(self, name: str, uid: int) -> list[str]:
        """The raw values of field ``name`` (lower case) of message ``uid``, through the shared cache."""
        fields = self.fields
        if fields is None:
            fields = self.fields = {}
        found = fields.get((name, uid))
        if found is None:
            raw = self.get(uid)
            if raw is None:
                try:
                    raw = self._mb.get_section(uid, StoreSection((), "HEADER"))
                except MessageExpunged:
                    raw = b""
            found = fields[(name, uid)] = _header_values(raw, name)
        return found


@functools.lru_cache(maxsize=256)
def _field_regex(name: str) -> re.Pattern[bytes]:
    return re.compile(rb"^" + re.escape(name.encode("utf-8", "replace")) + rb"[ \t]*:(.*(?:\r?\n[ \t].*)*)",
                      re.IGNORECASE | re.MULTILINE)


def _header_values(raw: bytes, name: str) -> list[str]:
    """What ``_parse_headers(raw).get(name, [])`` gives, found by one regex scan instead of a parse."""
    if not name or ":" in name or "\n" in name or "\r" in name:
        return _parse_headers(raw).get(name, [])
    out = []
    for m in _field_regex(name).finditer(raw):
        value = m.group(1).decode("utf-8", "replace")
        out.append(value.replace("\r\n", "").replace("\n", "").strip())
    return out


def _parse_headers(raw: bytes) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    text = raw.decode("utf-8", "replace").replace("\r\n", "\n")
    name = None
    value: list[str] = []
    for line in text.split("\n"):
        if line[:1] in (" ", "\t") and name is not None:
            value.append(line)
            continue
        if name is not None:
            out.setdefault(name, []).append("".join(value).strip())
        name = None
        if ":" in line and line[:1] not in (" ", "\t"):  # a field name never starts with white space
            n, _, v = line.partition(":")
            name, value = n.strip().lower(), [v]
    if name is not None:
        out.setdefault(name, []).append("".join(value).strip())
    return out



