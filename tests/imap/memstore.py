"""An in-memory implementation of the storage API, so the IMAP layer can be tested on its own.

It follows the API's contract (views change only in refresh(), Changes with descending expunged
sequence numbers, modseqs, UIDPLUS data, deliveries by id, usage) with no disk at all; the suite in
``tests/storage`` holds it and the Maildir storage to the same contract. Messages are kept with
CRLF line endings, so sizes are RFC822.SIZE.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dovetail.maildir.mailbox import clean_flags
from dovetail.mime.imapdata import body_to_imap, envelope_to_imap
from dovetail.storage import api
from dovetail.storage.api import (
    SYSTEM_FLAGS,
    Changes,
    CopyResult,
    Delivered,
    DeliveryId,
    FlagState,
    MailboxExists,
    MailboxInfo,
    MailboxNotAllowed,
    MailboxNotFound,
    MessageExpunged,
    MessageInfo,
    ReadOnlyMailbox,
    StoreMode,
    StoreResult,
    Usage,
)
from dovetail.storage.names import DELIMITER, normalize, parents, pattern_regex


@dataclass
class _Msg:
    uid: int
    data: bytes
    flags: set[str]
    date: datetime
    modseq: int
    recent: bool = True


@dataclass
class _Box:
    name: str
    uidvalidity: int
    uidnext: int = 1
    modseq: int = 1
    msgs: dict[int, _Msg] = field(default_factory=dict)
    expunged: list[tuple[int, int]] = field(default_factory=list)  # (modseq, uid)
    version: int = 0
    delivered: dict[str, int] = field(default_factory=dict)  # Delivered.key -> uid


def _keywords(flags: Iterable[str]) -> frozenset[str]:
    return frozenset(f for f in flags if f not in SYSTEM_FLAGS)


def _crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


class MemStorage(api.MailStorage):
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._last_uidvalidity = int(time.time())
        self.boxes: dict[str, _Box] = {"INBOX": _Box("INBOX", self._last_uidvalidity)}
        self.subscribed: set[str] = {"INBOX"}

    def _new_uidvalidity(self) -> int:
        """Never one handed out before, even to a mailbox deleted and created again."""
        self._last_uidvalidity = max(int(time.time()), self._last_uidvalidity + 1)
        return self._last_uidvalidity

    def _box(self, name: str) -> _Box:
        name = normalize(name)
        box = self.boxes.get(name)
        if box is None:
            raise MailboxNotFound(f"Mailbox doesn't exist: {name}")
        return box

    def list_mailboxes(self, reference: str = "", pattern: str = "*") -> list[MailboxInfo]:
        rx = pattern_regex(reference, pattern)
        with self.lock:
            real = set(self.boxes)
        implied = {p for n in real for p in parents(n)} - real
        everything = real | implied
        out = []
        for n in sorted(everything, key=lambda n: (n != "INBOX", n)):
            if rx.match(n):
                kids = any(o.startswith(n + DELIMITER) for o in everything)
                attrs = {"\\HasChildren" if kids else "\\HasNoChildren"}
                if n in implied:
                    attrs.add("\\Noselect")
                if n in self.subscribed:
                    attrs.add("\\Subscribed")
                out.append(MailboxInfo(n, DELIMITER, frozenset(attrs)))
        return out

    def exists(self, name: str) -> bool:
        return normalize(name) in self.boxes

    def create(self, name: str, special_use: str | None = None) -> None:
        with self.lock:
            name = normalize(name)
            if name in self.boxes:
                raise MailboxExists("Mailbox already exists")
            self.boxes[name] = _Box(name, self._new_uidvalidity())

    def delete(self, name: str) -> None:
        with self.lock:
            name = normalize(name)
            if name == "INBOX":
                raise MailboxNotAllowed("INBOX can't be deleted")
            self._box(name)
            if any(o.startswith(name + DELIMITER) for o in self.boxes):
                raise MailboxNotAllowed("mailbox has children")
            del self.boxes[name]

    def rename(self, old: str, new: str) -> None:
        with self.lock:
            new = normalize(new)
            if new in self.boxes:
                raise MailboxExists("Target exists")
            box = self._box(old)
            if new.startswith(box.name + DELIMITER):
                raise MailboxNotAllowed("cannot rename a mailbox into itself")
            if box.name == "INBOX":  # RFC 3501 6.3.5: the messages move, INBOX stays, empty
                self.create(new)
                target = self.boxes[new]
                for uid in sorted(box.msgs):
                    m = box.msgs[uid]
                    self._append(target, m.data, m.flags, m.date)
                box.msgs.clear()
                box.delivered.clear()
                box.modseq += 1
                box.version += 1
                return
            prefix = box.name + DELIMITER
            moves = [(n, new + n[len(box.name):]) for n in list(self.boxes) if n == box.name or n.startswith(prefix)]
            for _o, n in moves:
                if n != new and n in self.boxes:
                    raise MailboxExists("Target exists")
            moved = {o: self.boxes.pop(o) for o, _n in moves}
            for o, n in moves:
                moved[o].name = n
                self.boxes[n] = moved[o]

    def subscribe(self, name: str) -> None:
        self.subscribed.add(normalize(name))

    def unsubscribe(self, name: str) -> None:
        self.subscribed.discard(normalize(name))

    def list_subscribed(self, pattern: str = "*") -> list[str]:
        rx = pattern_regex("", pattern)
        return sorted(n for n in self.subscribed if rx.match(n))

    def special_use(self, name: str) -> str | None:
        return None

    def ensure_special_use(self) -> None:
        pass

    def status(self, name: str, items: Iterable[str]) -> dict[str, int]:
        with self.lock:
            box = self._box(name)
            vals = {
                "MESSAGES": len(box.msgs), "UIDNEXT": box.uidnext, "UIDVALIDITY": box.uidvalidity,
                "UNSEEN": sum(1 for m in box.msgs.values() if "\\Seen" not in m.flags),
                "RECENT": sum(1 for m in box.msgs.values() if m.recent),
                "HIGHESTMODSEQ": box.modseq, "SIZE": sum(len(m.data) for m in box.msgs.values()),
            }
            return {i: vals[i] for i in items}

    def select(self, name: str, *, readonly: bool = False) -> MemMailbox:
        return MemMailbox(self, self._box(name), readonly)

    def _append(self, box: _Box, data: bytes, flags: Iterable[str], date: datetime | None) -> int:
        uid = box.uidnext
        box.uidnext += 1
        box.modseq += 1
        box.msgs[uid] = _Msg(uid, data, set(flags), date or datetime.now(UTC), box.modseq)
        box.version += 1
        return uid

    def append(self, name: str, data: bytes, flags: Iterable[str] = (),
               internal_date: datetime | None = None) -> CopyResult:
        with self.lock:
            box = self._box(name)
            return CopyResult(box.uidvalidity, {0: self._append(box, data, clean_flags(flags), internal_date)})

    # --- delivery and usage -----------------------------------------------------------------------

    def deliver(self, chunks: Iterable[bytes], *, mailbox: str = "INBOX", flags: Iterable[str] = (),
                delivery_id: DeliveryId | None = None, retry: bool = False, quota: int | None = None,
                size: int = 0) -> Delivered:
        with self.lock:
            box = self._box(mailbox)
            wanted = clean_flags(flags)
            key = None if delivery_id is None else f"{delivery_id.queue_id}R{delivery_id.recipient}"
            if key is not None and box.delivered.get(key) in box.msgs:
                return Delivered(box.name, key, duplicate=True)
            if quota:
                self.check_quota(quota, size)
            uid = self._append(box, _crlf(b"".join(chunks)), wanted, None)
            key = key or f"M{uid}"
            box.delivered[key] = uid
            return Delivered(box.name, key)

    def delivered(self, delivery_id: DeliveryId, mailbox: str = "INBOX") -> Delivered | None:
        with self.lock:
            box = self._box(mailbox)
            key = f"{delivery_id.queue_id}R{delivery_id.recipient}"
            return Delivered(box.name, key) if box.delivered.get(key) in box.msgs else None

    def read_delivered(self, key: str, mailbox: str = "INBOX", limit: int | None = None) -> bytes | None:
        with self.lock:
            box = self._box(mailbox)
            m = box.msgs.get(box.delivered.get(key, 0))
            if m is None:
                return None
            return m.data if limit is None else m.data[:limit]

    def usage(self) -> Usage:
        with self.lock:
            msgs = [m for box in self.boxes.values() for m in box.msgs.values()]
            return Usage(sum(len(m.data) for m in msgs), len(msgs))


class _Watcher:
    def __init__(self, box: _Box) -> None:
        self.box = box
        self.seen = box.version

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.box.version != self.seen:
                self.seen = self.box.version
                return True
            time.sleep(0.02)
        return False

    async def wait_async(self, max_wait: float) -> bool:
        deadline = time.monotonic() + max_wait
        while time.monotonic() < deadline:
            if self.box.version != self.seen:
                self.seen = self.box.version
                return True
            await asyncio.sleep(0.02)
        return False

    def close(self) -> None:
        pass


class MemMailbox(api.Mailbox):
    def __init__(self, storage: MemStorage, box: _Box, readonly: bool) -> None:
        self.storage = storage
        self.box = box
        self.name = box.name
        self.readonly = readonly
        with storage.lock:
            self._uids = sorted(box.msgs)
            self._flags = {u: (frozenset(m.flags), m.modseq) for u, m in box.msgs.items()}
            self._recent = {u for u, m in box.msgs.items() if m.recent}
            if not readonly:
                for m in box.msgs.values():
                    m.recent = False
            self._own: set[tuple[int, int]] = set()

    @property
    def uidvalidity(self) -> int:
        return self.box.uidvalidity

    @property
    def uidnext(self) -> int:
        return self.box.uidnext

    @property
    def highestmodseq(self) -> int:
        return self.box.modseq

    @property
    def uids(self) -> Sequence[int]:
        return self._uids

    @property
    def recent_count(self) -> int:
        return len(self._recent)

    def seq_of(self, uid: int) -> int | None:
        import bisect

        i = bisect.bisect_left(self._uids, uid)
        return i + 1 if i < len(self._uids) and self._uids[i] == uid else None

    def first_unseen_seq(self) -> int | None:
        for i, u in enumerate(self._uids):
            m = self.box.msgs.get(u)
            if m and "\\Seen" not in m.flags:
                return i + 1
        return None

    def refresh(self, *, allow_expunges: bool = True, fast: bool = False) -> Changes:
        ch = Changes()
        with self.storage.lock:
            current = self.box.msgs
            if allow_expunges:
                gone = [u for u in self._uids if u not in current]
                for u in sorted(gone, reverse=True):
                    ch.expunged_seqs.append(self.seq_of(u) or 0)
                ch.expunged_uids = sorted(gone)
                if gone:
                    self._uids = [u for u in self._uids if u in current]
                    for u in gone:
                        self._flags.pop(u, None)
            new = sorted(u for u in current if u > (self._uids[-1] if self._uids else 0) and u not in self._flags)
            for u in new:
                m = current[u]
                self._uids.append(u)
                self._flags[u] = (frozenset(m.flags), m.modseq)
                if m.recent:
                    self._recent.add(u)
                    if not self.readonly:
                        m.recent = False
            ch.new_uids = new
            for u in self._uids:
                m = current.get(u)
                if m is None or u in new:
                    continue
                state = (frozenset(m.flags), m.modseq)
                if state != self._flags[u]:
                    self._flags[u] = state
                    if (u, m.modseq) not in self._own:
                        ch.flag_changes.append(FlagState(u, state[0], _keywords(state[0]), m.modseq, u in self._recent))
            ch.recent_count = len(self._recent)
        return ch

    def fetch_info(self, uids: Iterable[int], *, envelope: bool = True,
                   bodystructure: bool = True, raw: bool = False, dates: bool = True) -> list[MessageInfo]:
        out = []
        with self.storage.lock:
            for u in sorted(set(uids)):
                m = self.box.msgs.get(u)
                if m is None or self.seq_of(u) is None:
                    continue
                env = [None, _header(m.data, "subject"), None, None, None, None, None, None, None, None]
                cte = (_header(m.data, "content-transfer-encoding") or "7BIT").upper()
                bs = ["TEXT", "PLAIN", ["CHARSET", "us-ascii"], None, None, cte, len(m.data), 1]
                info = MessageInfo(u, frozenset(m.flags), _keywords(m.flags), m.date, len(m.data), m.modseq,
                                   u in self._recent, env if envelope else None,
                                   bs if bodystructure else None, bs if bodystructure else None)
                if raw:
                    info = MessageInfo(info.uid, info.flags, info.keywords, info.internal_date, info.size,
                                       info.modseq, info.recent,
                                       envelope_imap=envelope_to_imap(env) if envelope else None,
                                       bodystructure_imap=body_to_imap(bs) if bodystructure else None,
                                       body_imap=body_to_imap(bs) if bodystructure else None)
                out.append(info)
        return out

    def open_message(self, uid: int) -> bytes:
        m = self.box.msgs.get(uid)
        if m is None:
            raise MessageExpunged("expunged")
        return m.data

    def get_section(self, uid: int, section: Any, partial: tuple[int, int] | None = None) -> bytes:
        data = self.open_message(uid)
        head, sep, body = data.partition(b"\r\n\r\n")
        text = section.text if not isinstance(section, str) else (section or None)
        if text == "HEADER":
            out = head + sep
        elif text == "TEXT":
            out = body
        elif text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
            lines = [ln for ln in head.split(b"\r\n") if
                     (ln.split(b":")[0].decode().upper() in section.fields) == (text == "HEADER.FIELDS")]
            out = b"\r\n".join(lines) + b"\r\n\r\n"
        elif section.part == (1,):
            out = body
        else:
            out = data
        if partial:
            out = out[partial[0]: partial[0] + partial[1]]
        return out

    def append(self, data: bytes, flags: Iterable[str] = (), internal_date: datetime | None = None) -> int:
        with self.storage.lock:
            return self.storage._append(self.box, data, clean_flags(flags), internal_date)

    def store_flags(self, uids: Iterable[int], mode: StoreMode, flags: Iterable[str],
                    unchangedsince: int | None = None) -> StoreResult:
        if self.readonly:
            raise ReadOnlyMailbox("read-only")
        flags = clean_flags(flags)
        changed, modified = [], []
        with self.storage.lock:
            for u in sorted(set(uids)):
                m = self.box.msgs.get(u)
                if m is None:
                    continue
                if unchangedsince is not None and m.modseq > unchangedsince:
                    modified.append(u)
                    continue
                new = flags if mode is StoreMode.REPLACE else (
                    m.flags | flags if mode is StoreMode.ADD else m.flags - flags)
                if new == m.flags and unchangedsince is None:
                    continue
                self.box.modseq += 1
                m.flags = set(new)
                m.modseq = self.box.modseq
                self.box.version += 1
                self._own.add((u, m.modseq))
                self._flags[u] = (frozenset(new), m.modseq)
                changed.append(FlagState(u, frozenset(new), _keywords(new), m.modseq, u in self._recent))
        return StoreResult(changed, modified)

    def copy(self, uids: Iterable[int], dest: str) -> CopyResult:
        with self.storage.lock:
            box = self.storage._box(dest)
            mapping = {}
            for u in sorted(set(uids)):
                m = self.box.msgs.get(u)
                if m is not None:
                    mapping[u] = self.storage._append(box, m.data, m.flags, m.date)
            return CopyResult(box.uidvalidity, mapping)

    def move(self, uids: Iterable[int], dest: str) -> CopyResult:
        with self.storage.lock:
            res = self.copy(uids, dest)
            self._remove(res.uid_map)
            return res

    def _remove(self, uids: Iterable[int]) -> list[int]:
        out = []
        for u in sorted(uids):
            if self.box.msgs.pop(u, None) is not None:
                self.box.modseq += 1
                self.box.expunged.append((self.box.modseq, u))
                out.append(u)
        if out:
            self.box.version += 1
        return out

    def expunge(self, uids: Iterable[int] | None = None) -> list[int]:
        if self.readonly:
            raise ReadOnlyMailbox("read-only")
        with self.storage.lock:
            allowed = set(uids) if uids is not None else None
            doomed = [u for u in self._uids if (m := self.box.msgs.get(u)) is not None
                      and "\\Deleted" in m.flags and (allowed is None or u in allowed)]
            return self._remove(doomed)

    def expunged_since(self, modseq: int) -> list[int] | None:
        return sorted(u for ms, u in self.box.expunged if ms > modseq)

    def changed_since(self, modseq: int) -> list[int]:
        return [u for u in self._uids if (m := self.box.msgs.get(u)) is not None and m.modseq > modseq]

    def watch(self) -> _Watcher:
        return _Watcher(self.box)

    def close(self) -> None:
        pass


def _header(data: bytes, name: str) -> str | None:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        k, _, v = line.partition(b":")
        if k.strip().lower() == name.encode():
            return v.strip().decode("utf-8", "replace")
    return None


class MemStorages:
    """One MemStorage per account, shared by all sessions of that account."""

    def __init__(self) -> None:
        self.by_user: dict[str, MemStorage] = {}
        self.lock = threading.Lock()

    def __call__(self, account: Any) -> MemStorage:
        with self.lock:
            return self.by_user.setdefault(account.username, MemStorage())
