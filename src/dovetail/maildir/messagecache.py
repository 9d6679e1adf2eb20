"""The messages this process read last, kept in memory with their line endings already converted,
and the decoded text SEARCH TEXT/BODY looks through.

A mail client reads the same few messages over and over (the header for the list, then the body, then
a part, SEARCH over the text), and every read was an ``open`` + ``read`` + a CRLF conversion of the
whole file. A Maildir file's content never changes once delivered (only its name does, with its
flags), so a message is keyed by its folder, the folder's UIDVALIDITY and its UID, and a copy stays
valid for as long as it is kept. The cache is bounded by bytes (least recently used out first) and
shared by every session of the process; a message larger than an eighth of the bound is never kept.
The text of a message costs a MIME parse and a decode of each part, more than its read: SEARCH over a
folder's text did that for every message on every search.

Hand-written rather than ``functools.lru_cache`` because the bound is in bytes, not entries, and the
threads that run storage calls share it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable

DEFAULT_MAX_BYTES = 16 * 1024 * 1024


class MessageCache:
    """A size-bounded LRU map from a message key to its bytes or text (thread-safe; a str counts
    its length, close to its size for mail text)."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, bytes | str] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> bytes | str | None:
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
            return data

    def put(self, key: Hashable, data: bytes | str) -> None:
        if len(data) * 8 > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._size -= len(old)
            self._items[key] = data
            self._size += len(data)
            while self._size > self.max_bytes:
                _, gone = self._items.popitem(last=False)
                self._size -= len(gone)

    def forget(self, key: Hashable) -> None:
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._size -= len(old)

    @property
    def size(self) -> int:
        return self._size

    def __len__(self) -> int:
        return len(self._items)


MESSAGES = MessageCache()
TEXTS = MessageCache(DEFAULT_MAX_BYTES // 2)
