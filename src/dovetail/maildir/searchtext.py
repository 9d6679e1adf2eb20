"""The case-folded text SEARCH TEXT/BODY looks through, kept on disk beside a folder's index
(``dovetail-search.sqlite``), as Dovecot keeps what it learned of a message in its cache file.

Making a message's search text costs a read, a MIME parse, a decode of every textual part and a case
fold (about 0.1 ms for a typical message); a SEARCH BODY over a 10,000-message folder did all of it for
every message on every search, because the text of such a folder (over 100 MB) is far larger than the
process's in-memory cache, and an LRU scanned in order keeps nothing. Here each message's folded text
is written once, the first time a search needs it, and read back (a row read and a UTF-8 decode) by
every later search of every process.

It is a cache and never the truth: a message's content never changes under its UID, so a row keyed by
UID stays right for as long as the folder's UIDVALIDITY is the one recorded (another one empties the
store); each row carries a CRC of its text, and a row that does not match, a file SQLite cannot read
or any error at all means the text is decoded from the message again (a corrupt file is deleted and
made anew). Expunged messages' rows are deleted with the expunge; rows of messages removed behind our
back are pruned when the store reaches its bound. The store is bounded (``MAX_STORE_BYTES`` of text
per folder; past it new text is simply not kept, so a scan never evicts what is there) and a text over
``MAX_TEXT_BYTES`` is never kept. Writes are batched (a scan writes in a few transactions, not one a
message; what is left is written when a view of the folder closes), wait at most 50 ms for another
process's lock (the batch is then kept for the next one, within a bound) and are not synced to disk:
what a crash loses is decoded again.

A search over many messages asks the store once (:meth:`TextStore.scan`) for the UIDs whose text holds
the needle, comparing UTF-8 bytes row by row without making a str of each text; a row's CRC is checked
the first time this process reads it (rows are written once and never changed). The texts a scan
read are kept in memory as one buffer (while the folder's store stays under ``MAX_HAYSTACK_BYTES``
and the process's buffers under ``HAYSTACK_BUDGET``), so the next search's scan is a few
``bytes.find`` calls over it instead of reading every row again: a search that combines text keys
asks for several needles, and searches come many a second. The buffer is made anew when the store's
byte count says rows were added or deleted (by any process); until then it is still right for every
UID it holds (a UID's text never changes), and a UID it lacks is decoded as any other.

Hand-written over SQLite rather than a full-text index (FTS5): SEARCH matches any substring of the
folded text, which a token index cannot answer by itself.
"""

from __future__ import annotations

import bisect
import sqlite3
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path

from dovetail.log import get_logger

log = get_logger("maildir")

STORE_FILE = "dovetail-search.sqlite"
SCHEMA_VERSION = "1"
MAX_STORE_BYTES = 512 * 1024 * 1024
"""Folded text kept per folder at most (a 10,000-message folder of typical mail holds about 110 MB)."""
MAX_TEXT_BYTES = 4 * 1024 * 1024
_READ_AHEAD = 32  # rows read in one go: a search asks for the texts of a folder in UID order
_READ_AHEAD_TEXT = 256 * 1024  # larger texts are only read when asked for
_GAP_SECONDS = 2.0  # how long UIDs found missing by a read ahead are taken as not kept (a scan's time)
_NO_UID = 1 << 32
_FLUSH_COUNT = 256  # texts written per transaction
_FLUSH_BYTES = 1024 * 1024
_PENDING_LIMIT = 4 * 1024 * 1024  # texts held while other processes keep the store busy
_OPEN_STORES = 16  # stores a process keeps open (a file descriptor or three each)
_RETRY_SECONDS = 30.0  # a store that could not be opened (locked, unwritable) is tried again after this
_PRUNE_SECONDS = 300.0  # a full store looks for rows of messages gone at most this often
MAX_HAYSTACK_BYTES = 32 * 1024 * 1024
"""A folder's texts are kept in memory for scans only when its store holds at most this much."""
HAYSTACK_BUDGET = 96 * 1024 * 1024
"""Texts kept in memory for scans by all of a process's stores together; past it, stores scan rows."""
_NEEDLES_KEPT = 512  # answers a haystack remembers
_SINGLE_FINDS = 200  # texts looked through one by one for a needle before all are, and remembered
_haystack_bytes = 0  # held by all stores now (under _HAYSTACK_LOCK)
_HAYSTACK_LOCK = threading.Lock()


class _Haystack:
    """The texts of a store's rows joined in one buffer, ``starts[i]`` where the text of ``uids[i]``
    begins, and the store's byte count (``meta.bytes``) when they were read."""

    __slots__ = ("data", "starts", "uids", "stamp", "held", "index", "found", "asks")

    def __init__(self, data: bytes, starts: list[int], uids: list[int], stamp: str, held: int) -> None:
        self.data, self.starts, self.uids, self.stamp, self.held = data, starts, uids, stamp, held
        self.index = {uid: i for i, uid in enumerate(uids)}
        self.found: dict[bytes, set[int]] = {}  # needles looked for in all of it, and where they were
        self.asks: dict[bytes, int] = {}  # texts looked through one by one for a needle not in found

    def contains(self, uid: int, want: bytes) -> bool | None:
        """Whether the text of ``uid`` contains ``want``; None when it is not held."""
        i = self.index.get(uid)
        if i is None:
            return None
        known = self.found.get(want)
        if known is not None:
            return uid in known
        if len(self.asks) >= _NEEDLES_KEPT * 4:
            self.asks.clear()
        asks = self.asks[want] = self.asks.get(want, 0) + 1
        if asks > _SINGLE_FINDS:  # a search over many messages: all of them once, remembered
            return uid in self._matched(want)
        end = self.starts[i + 1] if i + 1 < len(self.starts) else len(self.data)
        return self.data.find(want, self.starts[i], end) >= 0

    def matches(self, want: bytes) -> set[int]:
        """The UIDs whose text contains ``want`` (remembered: searches ask for the same words again)."""
        return set(self._matched(want))

    def _matched(self, want: bytes) -> set[int]:
        hit = self.found.get(want)
        if hit is None:
            if len(self.found) >= _NEEDLES_KEPT:
                self.found.clear()
                self.asks.clear()
            hit = self.found[want] = self._find(want)
        return hit

    def extended(self, rows: list[tuple[int, bytes]], stamp: str) -> _Haystack:
        """This one with the texts of ``rows`` (UIDs it does not hold) added."""
        starts, uids, at = list(self.starts), list(self.uids), len(self.data)
        for uid, body in rows:
            starts.append(at)
            uids.append(uid)
            at += len(body)
        return _Haystack(b"".join([self.data, *(body for _, body in rows)]), starts, uids, stamp, at)

    def _find(self, want: bytes) -> set[int]:
        """One ``find`` a match, never across two texts."""
        if not want:
            return set(self.uids)
        data, starts, uids = self.data, self.starts, self.uids
        find, right, last, size = data.find, bisect.bisect_right, len(starts) - 1, len(want)
        found: set[int] = set()
        pos = 0
        while (at := find(want, pos)) >= 0:
            i = right(starts, at) - 1
            end = starts[i + 1] if i < last else len(data)
            if at + size <= end:
                found.add(uids[i])
                pos = end
            else:  # runs into the next text: look again from the next byte
                pos = at + 1
        return found

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS text (uid INTEGER PRIMARY KEY, crc INTEGER NOT NULL, body BLOB NOT NULL);
"""


class TextStore:
    """The search texts of one folder (thread-safe; every method answers None or does nothing rather
    than raise: the caller then decodes the message itself)."""

    def __init__(self, folder: Path, max_bytes: int = MAX_STORE_BYTES) -> None:
        self.path = folder / STORE_FILE
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._uidvalidity = 0
        self._bytes = 0
        self._full = False
        self._pending: dict[int, bytes] = {}
        self._pending_bytes = 0
        self._flush_count = _FLUSH_COUNT  # pending texts (or bytes) that make a batch: more after a busy store
        self._flush_bytes = _FLUSH_BYTES
        self._ahead: dict[int, tuple[int, bytes | None]] = {}
        self._gap = (0, 0, 0.0)  # (from, to, until): UIDs in [from, to) not in _ahead were not kept
        self._verified: set[int] = set()  # rows whose CRC this process has checked (rows never change)
        self._inode = 0
        self._retry_at = 0.0
        self._pruned_at = float("-inf")
        self._haystack: _Haystack | None = None

    # --- opening ------------------------------------------------------------------------------

    def _open(self, uidvalidity: int) -> sqlite3.Connection | None:
        """The connection, opened (made anew when corrupt) and emptied when the folder's UIDVALIDITY
        is not the one its texts were kept under; None when the file cannot be used at all."""
        if self._db is not None and uidvalidity == self._uidvalidity:
            return self._db
        if self._db is None and time.monotonic() < self._retry_at:
            return None
        try:
            if self._db is not None and self._inode != _inode(self.path):  # the folder was made again
                self._db.close()
                self._db = None
            if self._db is None:
                self._db = self._connect()
                self._inode = _inode(self.path)
            self._adopt(self._db, uidvalidity)
            return self._db
        except sqlite3.Error as exc:
            if self._db is not None:
                self._db.close()
                self._db = None
            if _corrupt(exc):
                try:
                    self._remove_files()
                    self._db = self._connect()
                    self._inode = _inode(self.path)
                    self._adopt(self._db, uidvalidity)
                    return self._db
                except (sqlite3.Error, OSError) as again:
                    exc = again  # type: ignore[assignment]
                    if self._db is not None:
                        self._db.close()
                        self._db = None
            log.warning("search text store unusable for now, decoding instead", store=str(self.path),
                        error=str(exc))
            self._retry_at = time.monotonic() + _RETRY_SECONDS
            return None

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=2, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=OFF")
        db.executescript(_SCHEMA)
        row = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if row is not None and row[0] != SCHEMA_VERSION:
            raise sqlite3.DatabaseError("search text store: unknown schema")
        db.execute("PRAGMA busy_timeout=50")  # a write that would wait longer is left for next time
        return db

    def _adopt(self, db: sqlite3.Connection, uidvalidity: int) -> None:
        """Take over the store's state for ``uidvalidity``: its byte count, or an empty store when its
        texts are of another UIDVALIDITY (or of none yet)."""
        metas = dict(db.execute("SELECT key, value FROM meta").fetchall())
        self._pending.clear()
        self._pending_bytes = 0
        self._ahead.clear()
        self._gap = (0, 0, 0.0)
        self._verified.clear()
        self._drop_haystack()
        if metas.get("uidvalidity") != str(uidvalidity) or metas.get("schema") != SCHEMA_VERSION:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("DELETE FROM text")
                db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                               [("schema", SCHEMA_VERSION), ("uidvalidity", str(uidvalidity)), ("bytes", "0")])
                db.execute("COMMIT")
            except sqlite3.Error:
                db.execute("ROLLBACK")
                raise
            metas["bytes"] = "0"
        self._uidvalidity = uidvalidity
        self._bytes = int(metas.get("bytes", "0"))
        self._full = self._bytes >= self.max_bytes

    def _remove_files(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(str(self.path) + suffix).unlink(missing_ok=True)

    # --- reading ------------------------------------------------------------------------------

    def get(self, uidvalidity: int, uid: int) -> str | None:
        """The folded text kept for ``uid``, or None (not kept, or not to be trusted)."""
        with self._lock:
            db = self._open(uidvalidity)
            if db is None:
                return None
            body = self._pending.get(uid)
            if body is not None:
                return body.decode("utf-8")
            row = self._ahead.pop(uid, None)
            if row is None:
                low, high, until = self._gap
                if low <= uid < high and time.monotonic() < until:
                    return None  # not kept when the rows around it were read, a moment ago
                try:
                    # Texts too large to read ahead come without their body, read below if asked for.
                    rows = db.execute("SELECT uid, crc, CASE WHEN length(body) <= ? THEN body END FROM text "
                                      "WHERE uid >= ? ORDER BY uid LIMIT ?",
                                      (_READ_AHEAD_TEXT, uid, _READ_AHEAD)).fetchall()
                    # Read after the rows: another process that found a new UIDVALIDITY empties the
                    # store and records it first, so rows read under the old one are never taken.
                    now = db.execute("SELECT value FROM meta WHERE key='uidvalidity'").fetchone()
                except sqlite3.Error as exc:
                    self._failed(exc)
                    return None
                if now is None or now[0] != str(uidvalidity):
                    self._ahead.clear()
                    self._uidvalidity = 0  # adopt the store afresh next time
                    return None
                self._ahead = {r[0]: (r[1], r[2]) for r in rows}
                high = rows[-1][0] if len(rows) == _READ_AHEAD else _NO_UID
                self._gap = (uid, high, time.monotonic() + _GAP_SECONDS)
                row = self._ahead.pop(uid, None)
                if row is None:
                    return None
            if row[1] is None:  # too large to have been read ahead
                try:
                    found = db.execute("SELECT crc, body FROM text WHERE uid = ?", (uid,)).fetchone()
                    now = db.execute("SELECT value FROM meta WHERE key='uidvalidity'").fetchone()
                except sqlite3.Error as exc:
                    self._failed(exc)
                    return None
                if found is None or now is None or now[0] != str(uidvalidity):
                    return None
                row = found
            body = self._checked(uid, *row)
            if body is None:
                return None
            try:
                return body.decode("utf-8")
            except UnicodeDecodeError:
                return None

    def _checked(self, uid: int, crc: int, body: object) -> bytes | None:
        """``body`` when it is the text that was written (its CRC matches), else None."""
        if not isinstance(body, bytes):
            return None
        if uid not in self._verified:
            if zlib.crc32(body) != crc:
                return None
            self._verified.add(uid)
        return body

    def scan(self, uidvalidity: int, needle: str) -> tuple[set[int], set[int]] | None:
        """``(found, known)``: the UIDs whose kept text contains ``needle`` (already folded) and the
        UIDs with a kept text at all, from one pass over the store; None when it cannot be read.

        The comparison is of UTF-8 bytes, which finds exactly what ``needle in text`` finds: the
        texts hold no surrogates, and in UTF-8 a character's bytes never match inside another's. A
        needle cut mid-character carries the cut bytes as surrogate escapes, compared as those bytes
        (see :mod:`dovetail.imap.search.needle`)."""
        want = _needle_bytes(needle)
        with self._lock:
            db = self._open(uidvalidity)
            if db is None:
                return None
            try:
                metas = _metas(db)
            except sqlite3.Error as exc:
                self._failed(exc)
                return None
            if metas.get("uidvalidity") != str(uidvalidity):
                self._uidvalidity = 0
                return None
            hay = self._haystack
            stamp = metas.get("bytes")
            if hay is not None and stamp is not None and hay.stamp != stamp:
                hay = self._extend(db, hay, uidvalidity, stamp)
            if hay is not None:
                found, known = hay.matches(want), set(hay.uids)
            else:
                scanned = self._scan_rows(db, want, uidvalidity, metas.get("bytes"))
                if scanned is None:
                    return None
                found, known = scanned
            for uid, data in self._pending.items():
                known.add(uid)
                if want in data:
                    found.add(uid)
                else:
                    found.discard(uid)
            return found, known

    def contains(self, uidvalidity: int, uid: int, needle: str) -> bool | None:
        """Whether the text of ``uid`` contains ``needle`` (already folded, compared as :meth:`scan`
        compares), from the texts held in memory since a scan; None when they do not hold it. A
        search that cheaper keys narrowed to some messages looks through just their texts."""
        if self._haystack is None:
            return None
        want = _needle_bytes(needle)
        with self._lock:
            hay = self._haystack
            if hay is None or uidvalidity != self._uidvalidity or uid in self._pending:
                return None
            return hay.contains(uid, want)

    def _scan_rows(self, db: sqlite3.Connection, want: bytes, uidvalidity: int,
                   stamp: str | None) -> tuple[set[int], set[int]] | None:
        """``(found, known)`` from one pass over the rows, keeping what they hold as the haystack of
        the next scans when it fits (the caller holds the lock)."""
        self._drop_haystack()
        keep = stamp is not None and self._bytes <= MAX_HAYSTACK_BYTES
        chunks: list[bytes] = []
        starts: list[int] = []
        uids: list[int] = []
        at = 0
        found: set[int] = set()
        known: set[int] = set()
        checked = self._checked
        try:
            cursor = db.execute("SELECT uid, crc, body FROM text ORDER BY uid")
            while rows := cursor.fetchmany(256):
                for uid, crc, body in rows:
                    data = checked(uid, crc, body)
                    if data is not None:
                        known.add(uid)
                        if want in data:
                            found.add(uid)
                        if keep:
                            chunks.append(data)
                            starts.append(at)
                            uids.append(uid)
                            at += len(data)
            metas = _metas(db)
        except sqlite3.Error as exc:
            self._failed(exc)
            return None
        if metas.get("uidvalidity") != str(uidvalidity):
            self._uidvalidity = 0
            return None
        # Kept only when no row came or went while they were read (the byte count is the same).
        if keep and stamp is not None and metas.get("bytes") == stamp and at <= MAX_HAYSTACK_BYTES \
                and _reserve(at):
            self._haystack = _Haystack(b"".join(chunks), starts, uids, stamp, at)
        return found, known

    def _extend(self, db: sqlite3.Connection, hay: _Haystack, uidvalidity: int,
                stamp: str) -> _Haystack | None:
        """``hay`` with the rows added since it was made (rows deleted since stay: a UID's text never
        changes); None (and no haystack) when they cannot be read or do not fit."""
        try:
            held = hay.index
            new = [uid for (uid,) in db.execute("SELECT uid FROM text") if uid not in held]
            rows: list[tuple[int, bytes]] = []
            for start in range(0, len(new), 500):
                chunk = new[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for uid, crc, body in db.execute(f"SELECT uid, crc, body FROM text WHERE uid IN ({marks})", chunk):
                    data = self._checked(uid, crc, body)
                    if data is not None:
                        rows.append((uid, data))
            metas = _metas(db)
        except sqlite3.Error as exc:
            self._failed(exc)
            return None
        self._drop_haystack()
        if metas.get("uidvalidity") != str(uidvalidity):
            self._uidvalidity = 0
            return None
        extra = sum(len(body) for _, body in rows)
        if hay.held + extra > MAX_HAYSTACK_BYTES or not _reserve(hay.held + extra):
            return None
        if rows:
            hay = hay.extended(rows, stamp)
        else:  # only deletions: what it remembers stays right
            hay.stamp = stamp
        self._haystack = hay
        return hay

    def _drop_haystack(self) -> None:
        if self._haystack is not None:
            _release(self._haystack.held)
            self._haystack = None

    # --- writing ------------------------------------------------------------------------------

    def put(self, uidvalidity: int, uid: int, text: str, live: Iterable[int] | None = None) -> None:
        """Keep ``text`` as the folded text of ``uid`` (written with the next batch); ``live``, when
        given, lists the folder's UIDs now, so a full store can drop the rows of messages gone."""
        body = text.encode("utf-8")
        if len(body) > MAX_TEXT_BYTES:
            return
        with self._lock:
            db = self._open(uidvalidity)
            if db is None:
                return
            if self._full:
                if live is not None and time.monotonic() >= self._pruned_at + _PRUNE_SECONDS:
                    self._pruned_at = time.monotonic()
                    self._prune(db, live)
                if self._full:
                    return
            if uid in self._pending:
                return
            self._pending[uid] = body
            self._pending_bytes += len(body)
            if len(self._pending) >= self._flush_count or self._pending_bytes >= self._flush_bytes:
                self._flush(db)

    def flush(self) -> None:
        """Write the texts kept so far."""
        with self._lock:
            if self._db is not None and self._pending:
                self._flush(self._db)

    def _flush(self, db: sqlite3.Connection) -> None:
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error:  # another process is writing: kept for the next batch, up to a point
            if self._pending_bytes > _PENDING_LIMIT:
                self._pending, self._pending_bytes = {}, 0
            self._flush_count = len(self._pending) + _FLUSH_COUNT  # not again before another batch
            self._flush_bytes = self._pending_bytes + _FLUSH_BYTES
            return
        pending, self._pending, self._pending_bytes = self._pending, {}, 0
        self._flush_count, self._flush_bytes = _FLUSH_COUNT, _FLUSH_BYTES
        try:
            metas = dict(db.execute("SELECT key, value FROM meta").fetchall())
            if metas.get("uidvalidity") != str(self._uidvalidity):  # another process started afresh
                db.execute("ROLLBACK")
                self._uidvalidity = 0
                return
            total = int(metas.get("bytes", "0"))
            room = [(uid, zlib.crc32(body), body) for uid, body in pending.items()]
            added = 0
            for uid, crc, body in room:
                if total + added + len(body) > self.max_bytes:
                    self._full = True
                    break
                if db.execute("INSERT OR IGNORE INTO text VALUES (?, ?, ?)", (uid, crc, body)).rowcount:
                    added += len(body)
            db.execute("INSERT OR REPLACE INTO meta VALUES ('bytes', ?)", (str(total + added),))
            db.execute("COMMIT")
            self._bytes = total + added
            self._gap = (0, 0, 0.0)  # what was read ahead no longer says what is kept
        except sqlite3.Error as exc:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            self._failed(exc)

    def forget(self, uidvalidity: int, uids: Iterable[int]) -> None:
        """The messages ``uids`` were expunged: their texts go."""
        doomed = sorted(set(uids))
        if not doomed or (self._db is None and not self.path.exists()):  # nothing was ever kept
            return
        with self._lock:
            db = self._open(uidvalidity)
            if db is None:
                return
            for uid in doomed:
                body = self._pending.pop(uid, None)
                if body is not None:
                    self._pending_bytes -= len(body)
                self._ahead.pop(uid, None)
            self._delete(db, doomed)

    def _delete(self, db: sqlite3.Connection, uids: list[int]) -> None:
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error:
            return  # another process is writing; the rows are pruned when the store is full
        try:
            gone = 0
            for start in range(0, len(uids), 500):
                chunk = uids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                gone += db.execute(f"SELECT COALESCE(SUM(length(body)), 0) FROM text WHERE uid IN ({marks})",
                                   chunk).fetchone()[0]
                db.execute(f"DELETE FROM text WHERE uid IN ({marks})", chunk)
            row = db.execute("SELECT value FROM meta WHERE key='bytes'").fetchone()
            total = max(0, (int(row[0]) if row is not None else 0) - gone)
            db.execute("INSERT OR REPLACE INTO meta VALUES ('bytes', ?)", (str(total),))
            db.execute("COMMIT")
            self._bytes = total
            self._full = total >= self.max_bytes
        except sqlite3.Error as exc:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            self._failed(exc)

    def _prune(self, db: sqlite3.Connection, live: Iterable[int]) -> None:
        """The store is full: drop the rows of messages no longer in the folder (removed by another
        program, or expunged while this store could not be written)."""
        keep = set(live)
        try:
            stale = [r[0] for r in db.execute("SELECT uid FROM text") if r[0] not in keep]
        except sqlite3.Error as exc:
            self._failed(exc)
            return
        if stale:
            self._delete(db, stale)
        if self._full:
            self._full = self._bytes + MAX_TEXT_BYTES > self.max_bytes

    def _failed(self, exc: sqlite3.Error) -> None:
        """A statement failed: a corrupt file is made anew on next use, anything else is left as it is."""
        self._ahead.clear()
        self._gap = (0, 0, 0.0)
        self._verified.clear()
        self._drop_haystack()
        if _corrupt(exc) and self._db is not None:
            self._db.close()
            self._db = None
            self._uidvalidity = 0
            try:
                self._remove_files()
            except OSError:
                self._retry_at = time.monotonic() + _RETRY_SECONDS

    def close(self) -> None:
        with self._lock:
            self._drop_haystack()
            if self._db is not None:
                if self._pending:
                    self._flush(self._db)
                self._db.close()
                self._db = None

    @property
    def size(self) -> int:
        """Bytes of text kept, as last seen."""
        return self._bytes


def _reserve(size: int) -> bool:
    """Count ``size`` bytes against :data:`HAYSTACK_BUDGET`; False (nothing counted) past it."""
    global _haystack_bytes
    with _HAYSTACK_LOCK:
        if _haystack_bytes + size > HAYSTACK_BUDGET:
            return False
        _haystack_bytes += size
        return True


def _release(size: int) -> None:
    global _haystack_bytes
    with _HAYSTACK_LOCK:
        _haystack_bytes = max(0, _haystack_bytes - size)


def _inode(path: Path) -> int:
    try:
        return path.stat().st_ino
    except OSError:
        return 0


def _corrupt(exc: BaseException) -> bool:
    """Whether ``exc`` says the file is not a usable store (rather than busy or unwritable now)."""
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc).lower()
        return "malformed" in text or "not a database" in text or "no such table" in text
    return isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.IntegrityError)


_STORES: OrderedDict[str, TextStore] = OrderedDict()
_STORES_LOCK = threading.Lock()


def store_for(folder: Path) -> TextStore:
    """The process's store for ``folder`` (shared by its sessions; the least recently used of more
    than ``_OPEN_STORES`` is closed)."""
    key = str(folder)
    with _STORES_LOCK:
        store = _STORES.get(key)
        if store is None:
            store = _STORES[key] = TextStore(folder)
        _STORES.move_to_end(key)
        while len(_STORES) > _OPEN_STORES:
            _, old = _STORES.popitem(last=False)
            old.close()
        return store


def flush_store(folder: Path) -> None:
    """Write what the process's store of ``folder`` holds unwritten, if it has a store (a view of the
    folder closes: texts decoded for it are kept for the next search, not held in memory)."""
    with _STORES_LOCK:
        store = _STORES.get(str(folder))
    if store is not None:
        store.flush()


def _needle_bytes(needle: str) -> bytes:
    """A folded needle as the bytes a scan looks for: a needle cut mid-character carries the cut bytes as
    surrogate escapes; a surrogate no parse leaves is kept as is and found nowhere."""
    try:
        return needle.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return needle.encode("utf-8", "surrogatepass")


def _metas(db: sqlite3.Connection) -> dict[str, str]:
    """The store's UIDVALIDITY and byte count, which tell whether held texts still stand."""
    return dict(db.execute("SELECT key, value FROM meta WHERE key IN ('uidvalidity', 'bytes')"))
