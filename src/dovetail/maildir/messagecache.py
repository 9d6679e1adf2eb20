"""The messages this process read last, kept in memory with their line endings already converted,
with what reading them again would cost a parse for: their part tree, their top header's fields and
the case-folded text SEARCH TEXT/BODY looks through.

A mail client reads the same few messages over and over (the header for the list, then the body, then
a part, SEARCH over the text), and every read was an ``open`` + ``read`` + a CRLF conversion of the
whole file. A Maildir file's content never changes once delivered (only its name does, with its
flags), so a message is keyed by its folder, the folder's UIDVALIDITY and its UID, and a copy stays
valid for as long as it is kept. The cache is bounded by bytes (least recently used out first) and
shared by every session of the process; a message larger than an eighth of the bound is never kept.
The text of a message costs a MIME parse and a decode of each part, more than its read: SEARCH over a
folder's text did that for every message on every search, and case-folded all of it again; it is kept
folded, as SEARCH compares it. A FETCH of a section looked the message's part tree up in the index and
rebuilt it, and ``HEADER.FIELDS`` parsed the header again, for every message of every FETCH.

Hand-written rather than ``functools.lru_cache`` because the bound is in bytes, not entries, and the
threads that run storage calls share it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Any

DEFAULT_MAX_BYTES = 16 * 1024 * 1024


class MessageCache:
    """A size-bounded LRU map from a message key to its bytes, text or parsed data (thread-safe;
    ``weigh`` gives an entry's size, by default its length: a str counts its length, close to its
    size for mail text)."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES, weigh: Callable[[Any], int] = len) -> None:
        self.max_bytes = max_bytes
        self._weigh = weigh
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any:
        with self._lock:
            entry = self._items.get(key)
            if entry is None:
                return None
            self._items.move_to_end(key)
            return entry[0]

    def get_many(self, keys: Sequence[Hashable]) -> list[Any]:
        """:meth:`get` of each key (None where missing), under one taking of the lock."""
        with self._lock:
            items = self._items
            out: list[Any] = []
            for key in keys:
                entry = items.get(key)
                if entry is None:
                    out.append(None)
                else:
                    items.move_to_end(key)
                    out.append(entry[0])
            return out

    def put(self, key: Hashable, data: Any) -> None:
        weight = self._weigh(data)
        if weight * 8 > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._size -= old[1]
            self._items[key] = (data, weight)
            self._size += weight
            while self._size > self.max_bytes:
                _, gone = self._items.popitem(last=False)
                self._size -= gone[1]

    def forget(self, key: Hashable) -> None:
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._size -= old[1]

    @property
    def size(self) -> int:
        return self._size

    def __len__(self) -> int:
        return len(self._items)


MESSAGES = MessageCache()
TEXTS = MessageCache()
"""Folded search text: the text of a thousand typical messages (11 MB) fits, so a SEARCH TEXT that
runs over a whole folder of that size finds every message here the second time (an LRU smaller than
the scan would keep none)."""
PART_TREES = MessageCache(4 * 1024 * 1024, weigh=lambda tree: tree[1])
"""(part tree, weight): the weight is what the tree's objects take in memory, about 300 bytes a part."""
HEADER_FIELDS = MessageCache(8 * 1024 * 1024, weigh=lambda entry: 2 * len(entry[0]) + 320 * len(entry[1]) + 300)
"""(header block, its (name, raw field) list, those by name) of a message's own header, for
``BODY[HEADER]`` and ``BODY[HEADER.FIELDS (...)]``: the headers of a few thousand typical messages, so
a mail client's list of a folder of a thousand finds every one here the second time."""
IMAP_DATA = MessageCache(8 * 1024 * 1024, weigh=lambda entry: sum(len(b) for b in entry if b) + 150)
"""(ENVELOPE, BODYSTRUCTURE, BODY) of a message as the IMAP bytes the index keeps: a mail client's
FETCH of a page of its message list asks for them again and again, and reading them from SQLite (large
rows, pages that other sessions' writes keep taking out of each connection's cache) was most of what
such a FETCH cost."""
