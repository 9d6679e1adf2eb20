"""MailStorage over a Maildir++ root: INBOX is the root, other folders are ``.Name.Sub`` directories.

Delivery (:meth:`MaildirStorage.deliver`) takes the fast path of :mod:`dovetail.maildir.deliver`
and usage the cached count of :mod:`dovetail.maildir.usage`: neither opens an index or takes a lock.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import uuid
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from dovetail.maildir import subscriptions as subs
from dovetail.maildir.deliver import (
    AlreadyDelivered,
    delivery_name,
    find_delivered,
    lf_chunks,
    recently_written,
    write_message,
)
from dovetail.maildir.dirsync import syncs_together as syncs_together  # the storage API's deliveries_together
from dovetail.maildir.filename import info_string
from dovetail.maildir.folder import MAX_MESSAGE_BYTES, Folder
from dovetail.maildir.mailbox import MaildirMailbox, append_to, clean_flags
from dovetail.maildir.usage import maildir_usage
from dovetail.storage import names
from dovetail.storage.api import (
    SEEN,
    SPECIAL_USE_FOLDERS,
    STATUS_ITEMS,
    SYSTEM_FLAGS,
    CopyResult,
    Delivered,
    DeliveryId,
    InvalidMailboxName,
    MailboxExists,
    MailboxInfo,
    MailboxNotAllowed,
    MailboxNotFound,
    MailStorage,
    Usage,
)

SPECIAL_USE_FILE = "dovetail-special-use"


def _make_maildir(path: Path, folder_marker: bool) -> None:
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    if folder_marker:
        (path / "maildirfolder").touch()


# A session names the same few mailboxes in every SELECT, STATUS and APPEND: their validation and
# on-disk names are worked out once per process (a name that fails raises each time; nothing is kept).
@functools.lru_cache(maxsize=1024)
def _canonical(name: str) -> str:
    if name.endswith(names.DELIMITER) and len(name) > 1:
        name = name[:-1]
    return names.normalize(name)


@functools.lru_cache(maxsize=1024)
def _disk_name(name: str) -> str:
    return names.to_disk(_canonical(name))


class MaildirStorage(MailStorage):
    """``create=False`` touches no disk on construction (a quota check or a delivery, which creates
    the Maildir when it writes): the root need not exist."""

    def __init__(self, root: Path, *, max_message_bytes: int = MAX_MESSAGE_BYTES, create: bool = True) -> None:
        self.root = Path(root)
        self.max_message_bytes = max_message_bytes
        if create:
            _make_maildir(self.root, folder_marker=False)

    # --- names ------------------------------------------------------------------------------

    def _canon(self, name: str) -> str:
        return _canonical(name)

    def _path(self, name: str) -> Path:
        disk = _disk_name(name)
        path = self.root if disk == "." else self.root / disk
        if path != self.root and path.parent != self.root:
            raise InvalidMailboxName("mailbox name escapes the root")
        return path

    def _all(self) -> list[str]:
        found = []
        with os.scandir(self.root) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    name = names.from_disk(entry.name)
                    if name is not None and name != "INBOX":
                        found.append(name)
        return found

    def exists(self, name: str) -> bool:
        path = self._path(name)
        return path == self.root or (path / "cur").is_dir()

    def _folder(self, name: str) -> Folder:
        if not self.exists(name):
            raise MailboxNotFound(f"no mailbox {name[:100]!r}")
        return Folder(self._path(name))

    # --- LIST --------------------------------------------------------------------------------

    def _special_map(self) -> dict[str, str]:
        out = {v: k for k, v in SPECIAL_USE_FOLDERS.items()}
        try:
            for line in (self.root / SPECIAL_USE_FILE).read_text("utf-8").splitlines():
                attr, _, name = line.partition("\t")
                if attr in SPECIAL_USE_FOLDERS and name:
                    out[name] = attr
        except FileNotFoundError:
            pass
        return out

    def special_use(self, name: str) -> str | None:
        return self._special_map().get(self._canon(name))

    def list_mailboxes(self, reference: str = "", pattern: str = "*") -> list[MailboxInfo]:
        real = set(self._all())
        implied = {p for n in real for p in names.parents(n)} - real
        everything = sorted(real | implied)
        regex = names.pattern_regex(reference, pattern)
        subscribed = set(subs.read(self.root / subs.SUBSCRIPTIONS))
        special = self._special_map()
        out: list[MailboxInfo] = []
        candidates = ["INBOX", *everything]
        for name in candidates:
            if not regex.match(name):
                continue
            prefix = name + names.DELIMITER
            has_kids = any(o.startswith(prefix) for o in everything)
            attrs = {"\\HasChildren" if has_kids else "\\HasNoChildren"}
            if name in implied:
                attrs.add("\\Noselect")
            if name in subscribed:
                attrs.add("\\Subscribed")
            use = special.get(name) if name in real else None
            if use:
                attrs.add(use)
            out.append(MailboxInfo(name, names.DELIMITER, frozenset(attrs), use))
        return out

    # --- CREATE / DELETE / RENAME ---------------------------------------------------------------

    def create(self, name: str, special_use: str | None = None) -> None:
        canon = self._canon(name)
        if canon == "INBOX" or self.exists(canon):
            raise MailboxExists(f"mailbox {canon[:100]!r} exists")
        if special_use is not None and special_use not in SPECIAL_USE_FOLDERS:
            raise MailboxNotAllowed(f"unsupported special use {special_use[:20]!r}")
        path = self._path(canon)
        try:
            os.mkdir(path)
        except FileExistsError:
            if (path / "cur").is_dir():
                raise MailboxExists(f"mailbox {canon[:100]!r} exists") from None
        _make_maildir(path, folder_marker=True)
        if special_use:
            with open(self.root / SPECIAL_USE_FILE, "a", encoding="utf-8") as f:
                f.write(f"{special_use}\t{canon}\n")

    def delete(self, name: str) -> None:
        canon = self._canon(name)
        if canon == "INBOX":
            raise MailboxNotAllowed("INBOX cannot be deleted")
        if not self.exists(canon):
            raise MailboxNotFound(f"no mailbox {canon[:100]!r}")
        prefix = canon + names.DELIMITER
        if any(n.startswith(prefix) for n in self._all()):
            raise MailboxNotAllowed("mailbox has children")
        path = self._path(canon)
        trash = self.root / f"..dovetail-trashed-{uuid.uuid4().hex}"
        os.rename(path, trash)
        shutil.rmtree(trash, ignore_errors=True)

    def rename(self, old: str, new: str) -> None:
        src, dst = self._canon(old), self._canon(new)
        if dst == "INBOX" or self.exists(dst):
            raise MailboxExists(f"mailbox {dst[:100]!r} exists")
        if not self.exists(src):
            raise MailboxNotFound(f"no mailbox {src[:100]!r}")
        if dst.startswith(src + names.DELIMITER):
            raise MailboxNotAllowed("cannot rename a mailbox into itself")
        if src == "INBOX":
            self._rename_inbox(dst)
            return
        moves = [(src, dst)]
        prefix = src + names.DELIMITER
        for child in self._all():
            if child.startswith(prefix):
                moves.append((child, dst + child[len(src) :]))
        for _o, n in moves:
            self._canon(n)
            if self.exists(n):
                raise MailboxExists(f"mailbox {n[:100]!r} exists")
        for o, n in moves:
            os.rename(self._path(o), self._path(n))
        subscribed = subs.read(self.root / subs.SUBSCRIPTIONS)
        mapping = dict(moves)
        if any(s in mapping for s in subscribed):
            subs.write(self.root / subs.SUBSCRIPTIONS, [mapping.get(s, s) for s in subscribed])

    def _rename_inbox(self, dst: str) -> None:
        """RFC 3501: move INBOX's messages into a new mailbox; INBOX stays, empty."""
        self.create(dst)
        target = self._path(dst)
        for sub in ("cur", "new"):
            for fn in os.listdir(self.root / sub):
                if not fn.startswith("."):
                    os.rename(self.root / sub / fn, target / sub / fn)

    # --- subscriptions ------------------------------------------------------------------------

    def subscribe(self, name: str) -> None:
        canon = self._canon(name)
        path = self.root / subs.SUBSCRIPTIONS
        current = subs.read(path)
        if canon not in current:
            subs.write(path, [*current, canon])

    def unsubscribe(self, name: str) -> None:
        canon = self._canon(name)
        path = self.root / subs.SUBSCRIPTIONS
        current = subs.read(path)
        if canon in current:
            subs.write(path, [n for n in current if n != canon])

    def list_subscribed(self, pattern: str = "*") -> list[str]:
        regex = names.pattern_regex("", pattern)
        return [n for n in subs.read(self.root / subs.SUBSCRIPTIONS) if regex.match(n)]

    def ensure_special_use(self) -> None:
        for folder in SPECIAL_USE_FOLDERS.values():
            if not self.exists(folder):
                try:
                    self.create(folder)
                except MailboxExists:
                    pass  # another login of the same user (another worker) made it just now
            self.subscribe(folder)

    # --- STATUS / SELECT / APPEND ---------------------------------------------------------------

    def status(self, name: str, items: Iterable[str]) -> dict[str, int]:
        wanted = [i.upper() for i in items]
        bad = [i for i in wanted if i not in STATUS_ITEMS]
        if bad:
            raise ValueError(f"unknown STATUS item {bad[0][:20]!r}")
        folder = self._folder(name)
        try:
            folder.sync()
            idx = folder.index
            db = idx.db
            out: dict[str, int] = {}
            for item in wanted:
                if item == "MESSAGES":
                    out[item] = db.execute("SELECT count(*) FROM msg").fetchone()[0]
                elif item == "UIDNEXT":
                    out[item] = idx.get_int("uidnext", 1)
                elif item == "UIDVALIDITY":
                    out[item] = idx.get_int("uidvalidity")
                elif item == "UNSEEN":
                    # Counted by SQLite: the flags column is the flags joined by single spaces.
                    out[item] = db.execute(
                        "SELECT count(*) FROM msg WHERE instr(' ' || flags || ' ', ?) = 0", (f" {SEEN} ",)
                    ).fetchone()[0]
                elif item == "RECENT":
                    first = idx.get_int("first_recent_uid", 1)
                    out[item] = db.execute("SELECT count(*) FROM msg WHERE uid>=?", (first,)).fetchone()[0]
                elif item == "HIGHESTMODSEQ":
                    out[item] = idx.get_int("highestmodseq", 1)
                elif item == "SIZE":
                    out[item] = db.execute("SELECT coalesce(sum(vsize), 0) FROM msg").fetchone()[0]
            return out
        finally:
            folder.close()

    def select(self, name: str, *, readonly: bool = False) -> MaildirMailbox:
        canon = self._canon(name)
        folder = self._folder(canon)
        return MaildirMailbox(folder, canon, readonly, self._resolve_target, self.max_message_bytes)

    def _resolve_target(self, name: str) -> Folder:
        return self._folder(name)

    def append(
        self, name: str, data: bytes, flags: Iterable[str] = (), internal_date: datetime | None = None
    ) -> CopyResult:
        folder = self._folder(name)
        try:
            uid, uidvalidity, indexed = append_to(folder, data, flags, internal_date, self.max_message_bytes)
            if not indexed:
                folder.sync()
                uidvalidity = folder.index.get_int("uidvalidity")
            return CopyResult(uidvalidity, {0: uid})
        finally:
            folder.close()

    # --- delivery and usage -----------------------------------------------------------------------

    def _delivery_folder(self, mailbox: str) -> tuple[str, Path]:
        if mailbox == "INBOX":
            return mailbox, self.root
        canon = self._canon(mailbox)
        if canon == "INBOX":
            return canon, self.root
        if not self.exists(canon):
            raise MailboxNotFound(f"no mailbox {canon[:100]!r}")
        return canon, self._path(canon)

    @staticmethod
    def _info(path: Path, flags: Iterable[str]) -> str | None:
        """The ``:2,`` letters for ``flags``; None (a plain ``new/`` delivery) when there are none."""
        wanted = clean_flags(flags)
        if not wanted:
            return None
        if wanted <= SYSTEM_FLAGS:
            return info_string(frozenset(wanted), "")
        folder = Folder(path)  # keywords need dovecot-keywords letters
        try:
            return folder.info_for(wanted)
        finally:
            folder.close()

    def deliver(
        self,
        chunks: Iterable[bytes],
        *,
        mailbox: str = "INBOX",
        flags: Iterable[str] = (),
        delivery_id: DeliveryId | None = None,
        retry: bool = False,
        quota: int | None = None,
        size: int = 0,
    ) -> Delivered:
        name, path = self._delivery_folder(mailbox)
        info = self._info(path, flags)
        base = delivery_name(delivery_id) if delivery_id is not None else None
        if base is not None:
            earlier = find_delivered(path, base) if retry else recently_written(path, base)
            if earlier is not None:
                return Delivered(name, _key(earlier.name), duplicate=True)
        if quota:
            self.check_quota(quota, size)
        try:
            final = write_message(path, lf_chunks(chunks), base, info)
        except AlreadyDelivered as exc:
            return Delivered(name, _key(exc.path.name), duplicate=True)
        return Delivered(name, _key(final.name))

    def delivered(self, delivery_id: DeliveryId, mailbox: str = "INBOX") -> Delivered | None:
        name, path = self._delivery_folder(mailbox)
        found = find_delivered(path, delivery_name(delivery_id))
        return None if found is None else Delivered(name, _key(found.name))

    def read_delivered(self, key: str, mailbox: str = "INBOX", limit: int | None = None) -> bytes | None:
        if not key or key.startswith(".") or "/" in key or ":" in key or "\0" in key:
            raise ValueError(f"not a Maildir file name: {key[:100]!r}")
        _name, path = self._delivery_folder(mailbox)
        for candidate in _candidates(path, key):
            try:
                with open(candidate, "rb") as fh:
                    return fh.read() if limit is None else fh.read(limit)
            except (FileNotFoundError, IsADirectoryError):
                continue  # moved by a reader meanwhile: look at the next place
        return None

    def usage(self) -> Usage:
        return maildir_usage(self.root)


def _key(filename: str) -> str:
    """A message's name without its ``:2,`` flags: what stays when a reader moves or flags it."""
    return filename.split(":", 1)[0]


def _candidates(path: Path, key: str) -> Iterable[Path]:
    """Where a message named ``key`` may be: ``new/key``, then (moved and flagged by a reader) any
    ``key:2,...`` in ``cur/``, then in ``new/``."""
    yield path / "new" / key
    for sub in ("cur", "new"):
        with contextlib.suppress(FileNotFoundError), os.scandir(path / sub) as it:
            found = [Path(e.path) for e in it if _key(e.name) == key]
        yield from found
