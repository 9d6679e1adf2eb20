"""One Maildir folder: synchronising ``cur/``/``new/``, ``dovecot-uidlist`` and our index.

A sync lists the directories, gives UIDs to files nobody numbered yet (under
``dovecot-uidlist.lock``, like Dovecot), takes the facts of files seen for the first time from their
names (outside any lock; nothing is parsed before a client asks, see
:mod:`~dovetail.maildir.lazyfacts`), then applies file renames (flag changes), new files and
vanished files to the index in one SQLite transaction, bumping the modseq of everything that
changed. Nothing is done when the directory and uidlist stamps did not move since the previous sync
in this process.

The sessions of one process that have the same folder open share one :class:`FolderState` (the
stamps of the last sync and the in-memory copy of the index's uid -> file map), so a change is
looked at by one listing per process instead of one per session, and the map is held once. The
changes the shared facts take in from the index are journaled (:meth:`Folder.changes_since`), so each
session's refresh learns of another's STORE or EXPUNGE from memory instead of reading the same rows.

Changes made by Dovetail itself (flags, APPEND, EXPUNGE) are written to the index in the same write
transaction as the rename, so the directories need no listing to learn of them. As Dovecot keeps the
directories' mtimes in its index header, the index keeps the stamp of the directories it matches
(``dir_stamp``) and when a listing last confirmed it (``dir_checked``): a session that changes the
folder moves that stamp on in the same transaction (:meth:`Folder.own_change`), and a sync in any
process that finds the directories at the index's stamp has nothing to list (a sync that finds another
stamp first waits for the index's write lock, behind which such a change may be under way, and asks
the index again). Only other writers
(delivery, Dovecot, Postfix) need a listing, and their changes move the stamp, with one exception a
file system timestamp cannot show: a change in the same clock tick as the one the stamp was taken in.
As Dovecot does (``MAILDIR_SYNC_SECS``), a stamp too close to the listing that confirmed it is
"dirty" and the directories are listed once more when that delay has passed (see
:mod:`~dovetail.maildir.stamps`).

What a listing leads to is decided by :mod:`~dovetail.maildir.syncplan` from plain data and carried
out by :mod:`~dovetail.maildir.syncapply`; the parsed uidlist is shared through
:mod:`~dovetail.maildir.uidcache`, the per-process state through :mod:`~dovetail.maildir.folderstate`.
"""

from __future__ import annotations

import bisect
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from itertools import repeat
from operator import itemgetter
from pathlib import Path
from typing import TypeVar

from dovetail.durable import write_fsync
from dovetail.maildir import firstfill, syncapply, syncplan, uidcache, uidlist
from dovetail.maildir import keywords as kwfile
from dovetail.maildir.diskfull import is_disk_full
from dovetail.maildir.filename import INFO_SEP, info_string, new_basename
from dovetail.maildir.folderstate import _IDLE_STATES as _IDLE_STATES
from dovetail.maildir.folderstate import _STATES as _STATES
from dovetail.maildir.folderstate import IDLE_STATES_KEPT as IDLE_STATES_KEPT
from dovetail.maildir.folderstate import JOURNAL_KEPT, acquire_state, release_state, take_connection
from dovetail.maildir.folderstate import FolderState as FolderState
from dovetail.maildir.index import DATE_UNKNOWN, INDEX_FILE, Index
from dovetail.maildir.lock import DotLock
from dovetail.maildir.messagefacts import MAX_MESSAGE_BYTES as MAX_MESSAGE_BYTES
from dovetail.maildir.messagefacts import analyse
from dovetail.maildir.stamps import CUR as CUR
from dovetail.maildir.stamps import DIRTY_SECONDS as DIRTY_SECONDS
from dovetail.maildir.stamps import DIRTY_SECONDS_FINE as DIRTY_SECONDS_FINE
from dovetail.maildir.stamps import FULL_SYNC_SECONDS, UIDLIST_STAMP, dirty_window, encode, is_dirty, stamp_of, trusted
from dovetail.maildir.stamps import KEYWORDS_STAMP as KEYWORDS_STAMP
from dovetail.maildir.stamps import NEW as NEW
from dovetail.maildir.syncplan import Listed
from dovetail.mime.parser import to_crlf
from dovetail.storage.api import DiskFull, FlagState

# The names imported "as" themselves stay importable from here, where the rest of the package and
# the tests have always found them.
T = TypeVar("T")

UIDVALIDITY_FILE = "dovetail-uidvalidity"
TMP_MAX_AGE = 36 * 3600


class Folder:
    """Sync engine for one folder directory (INBOX is the root itself)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.path_text = str(path)  # for joins on the read path, where pathlib's objects cost
        state = acquire_state(path)
        try:
            self.index = Index(path, take_connection(state, path / INDEX_FILE))
        except BaseException:
            release_state(path, state)
            raise
        self.keywords: dict[int, str] = {}
        # What a stamp is made of (see CUR ...), as strings: every refresh stats them.
        self._stamp_paths = tuple(str(path / name) for name in ("cur", "new", uidlist.UIDLIST, kwfile.KEYWORDS))
        self._keywords_path = self._stamp_paths[KEYWORDS_STAMP]
        self._closed = False
        self._unnumbered_wait = False  # the last listing left files without UIDs out (a full disk)
        if self.index.in_memory:
            release_state(path, state)
            self.state = FolderState()
            self._shared = False
        else:
            self.state = state
            self._shared = True
            if state.ident != self.index.ident:
                state.forget(self.index.ident)
        self.index.db.on_memory = self._index_in_memory

    def _index_in_memory(self) -> None:
        """The index went on in memory (its file cannot be written): this folder's copy differs from
        what the other sessions of the process share from now on, so it leaves their state for a
        private one, which the next sync fills from the Maildir and the copy."""
        if self._shared:
            self._shared = False
            old = self.state
            self.state = FolderState()
            self.state.ident = self.index.ident
            release_state(self.path, old)

    # The shared state under the names the sync code uses.
    _stamp = property(lambda self: self.state.stamp, lambda self, v: setattr(self.state, "stamp", v))
    _files = property(lambda self: self.state.files, lambda self, v: setattr(self.state, "files", v))
    _fnset = property(lambda self: self.state.fnset, lambda self, v: setattr(self.state, "fnset", v))
    _cur = property(lambda self: self.state.cur, lambda self, v: setattr(self.state, "cur", v))
    _new = property(lambda self: self.state.new, lambda self, v: setattr(self.state, "new", v))
    _mirror_modseq = property(
        lambda self: self.state.mirror_modseq, lambda self, v: setattr(self.state, "mirror_modseq", v)
    )
    _mirror_uv = property(lambda self: self.state.mirror_uv, lambda self, v: setattr(self.state, "mirror_uv", v))
    _uidnext_meta = property(
        lambda self: self.state.uidnext_meta, lambda self, v: setattr(self.state, "uidnext_meta", v)
    )

    def invalidate(self) -> None:
        """This process changed the folder: the next sync (of any session) looks at the disk."""
        self.state.stamp = None
        self.state.looked_until = 0.0

    def own_change(self, before: tuple | None, after: tuple, touched: frozenset[int]) -> None:
        """This process changed the parts ``touched`` of the folder (see ``CUR`` ...); ``before`` and
        ``after`` are the stamps taken inside the index write transaction that records the change,
        before and after it, and this is called inside it too (a caller that rolls back calls
        :meth:`invalidate`). Where the index (and this process) trusted ``before``, they trust
        ``after`` now, without a listing, provided nothing else moved meanwhile."""
        ok = before is not None and all(before[i] == after[i] for i in range(len(after)) if i not in touched)
        idx = self.index
        if ok and idx.get_meta("dir_stamp") == encode(before):
            idx.set_meta("dir_stamp", encode(after))
        # Not under ``state.lock``: a sync holds that lock while it waits for the index's write lock,
        # which the caller holds now.
        state = self.state
        state.stamp = after if ok and state.stamp == before else None

    def stamp(self) -> tuple:
        """The directories' and files' stamp now (for :meth:`own_change`)."""
        return self._stamp_now()

    @contextmanager
    def changing(self) -> Iterator[tuple]:
        """An index write transaction around a change this process makes to the folder's files: yields
        the stamp before the change (for :meth:`own_change`); commits, or rolls back and stops trusting
        the stamp (the files may have moved without the index)."""
        self.index.begin()
        try:
            yield self._stamp_now()
            self.index.commit()
        except BaseException:
            self.index.rollback()
            self.invalidate()
            raise

    def recheck_in(self) -> float | None:
        """Seconds until a dirty stamp (see the module docstring) is due to be listed again; None when
        the stamp is trusted or no sync has run."""
        state = self.state
        stamp = state.stamp
        if stamp is None:
            return None
        window = dirty_window(stamp)
        if not is_dirty(stamp, state.checked_at, window):
            return None
        return max(0.0, state.checked_at + window - time.time())

    def _publish(self, stamp: tuple, checked_at: float) -> None:
        """Record in the index that a listing at ``checked_at`` found the directories at ``stamp``
        matching it; only if they have not moved since (under the index's write lock, which every
        Dovetail writer holds while it renames)."""
        encoded = encode(stamp)
        idx = self.index
        if idx.get_meta("dir_stamp") == encoded and float(idx.get_meta("dir_checked") or 0) >= checked_at:
            return
        try:
            idx.begin()
        except sqlite3.OperationalError:
            return
        try:
            if self._stamp_now() == stamp:
                idx.set_meta("dir_stamp", encoded)
                idx.set_meta("dir_checked", repr(checked_at))
            idx.commit()
        except BaseException:
            idx.rollback()
            raise

    # --- files ---------------------------------------------------------------------------------

    @property
    def uidlist_path(self) -> Path:
        return self.path / uidlist.UIDLIST

    def lock(self) -> DotLock:
        return DotLock(self.path / uidlist.LOCK)

    def _stamp_now(self) -> tuple:
        return stamp_of(self._stamp_paths)

    def _list(self, move_new: bool) -> dict[str, Listed]:
        return syncapply.list_folder(self.path, move_new)

    def file_path(self, listed_sub: str, filename: str) -> Path:
        return self.path / listed_sub / filename

    # --- uidlist ------------------------------------------------------------------------------

    def _new_uidvalidity(self) -> int:
        """A UIDVALIDITY never handed out before in this Maildir++ (a mailbox deleted and created
        again in the same second still gets a new one): time-based, bumped past the last one given,
        which is remembered in ``dovetail-uidvalidity`` at the root."""
        root = self.path.parent if (self.path / "maildirfolder").exists() else self.path
        record = root / UIDVALIDITY_FILE
        try:
            last = int(record.read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            last = 0
        value = max(int(time.time()), last + 1, self.index.get_int("uidvalidity", 0) + 1)
        tmp = record.with_name(f"{UIDVALIDITY_FILE}.{uuid.uuid4().hex[:8]}")
        tmp.write_text(f"{value}\n")
        os.replace(tmp, record)
        return value

    def assign_uids(self, basenames: list[str], listing: dict[str, Listed] | None) -> uidlist.Uidlist:
        """Give UIDs to ``basenames`` not yet in the uidlist; create the uidlist when missing. With a
        ``listing`` (a sync), records of files no longer in the folder are dropped too."""
        return syncapply.assign_uids(self.path, basenames, listing is not None, self._new_uidvalidity)

    # --- keywords -----------------------------------------------------------------------------

    def load_keywords(self, *, fresh: bool = False) -> dict[int, str]:
        """The keyword map of ``dovecot-keywords`` (the process's parse while the file did not change;
        ``fresh``: read now, as under its lock before adding to it)."""
        if fresh:
            self.keywords = kwfile.read(self.path / kwfile.KEYWORDS)
        else:
            self.keywords = kwfile.read_cached(self._keywords_path)
        return self.keywords

    def letters_for(self, names: set[str]) -> str:
        """Keyword letters for ``names``, adding new ones to ``dovecot-keywords`` (26 at most)."""
        if not names:
            return ""
        current = self.load_keywords()
        by_name = {n: i for i, n in current.items()}
        missing = [n for n in names if n not in by_name]
        if missing:
            with DotLock(self.path / (kwfile.KEYWORDS + ".lock")):
                current = self.load_keywords(fresh=True)
                by_name = {n: i for i, n in current.items()}
                for n in sorted(missing):
                    if n in by_name:
                        continue
                    free = [i for i in range(kwfile.MAX_KEYWORDS) if i not in current]
                    if not free:
                        break
                    current[free[0]] = n
                    by_name[n] = free[0]
                kwfile.write(self.path / kwfile.KEYWORDS, current)
                self.keywords = current
        return "".join(kwfile.letter(by_name[n]) for n in names if n in by_name)

    def flags_of(self, info: str) -> list[str]:
        return syncplan.flags_of(info, self.keywords)

    # --- sync ---------------------------------------------------------------------------------

    def _cached_uidlist(self) -> tuple[uidlist.Uidlist | None, dict[str, int]]:
        """The uidlist and its basename map, parsed again only when the file's stamp moved."""
        return uidcache.cached(self.uidlist_path)

    def _by_base_of(self, ul: uidlist.Uidlist) -> dict[str, int]:
        return uidcache.by_base_of(self.uidlist_path, ul)

    def with_facts(self, use: Callable[[dict[int, tuple[int, frozenset[str], float, int, int, bool]]], T]) -> T:
        """Call ``use`` with the shared uid -> facts map, brought up to date with the index first (only
        the rows whose modseq moved, and the expunges since, which the journal keeps; everything after a
        reset or a lost history). ``use`` runs under the state's lock and must not keep the map."""
        with self.state.lock:
            return use(self._current_facts(None))

    def _current_facts(self, index_at: tuple[int, int] | None) -> dict[int, tuple]:
        """The shared facts, as current as the index; ``index_at``: its (UIDVALIDITY, highest modseq)
        as the caller has just read them, when it has. Under the state's lock."""
        state = self.state
        if state.facts is not None and index_at == (state.facts_uv, state.facts_modseq):
            return state.facts
        # The common case, facts as current as the index, told by one statement.
        metas = self.index.get_metas("uidvalidity", "highestmodseq")
        if (
            state.facts is None
            or int(metas.get("uidvalidity", 0)) != state.facts_uv
            or int(metas.get("highestmodseq", 1)) != state.facts_modseq
        ):
            self._catch_up_facts()
        assert state.facts is not None
        return state.facts

    def _catch_up_facts(self) -> None:
        """Bring the shared facts (and their journal) up to date with the index, in one read transaction."""
        state = self.state
        idx = self.index
        db = idx.db
        with idx.snapshot():
            metas = idx.get_metas("uidvalidity", "highestmodseq", "expunge_floor")
            uv = int(metas.get("uidvalidity", 0))
            top = int(metas.get("highestmodseq", 1))
            since = state.facts_modseq
            cols = "uid, flags, idate, vsize, modseq"
            if (
                state.facts is None
                or uv != state.facts_uv
                or top < since
                or since < int(metas.get("expunge_floor", 0))
            ):
                # Row by row: a row is dropped as soon as its facts are made, which keeps the
                # garbage collector's count of new objects (and its collections) down.
                state.facts = {
                    u: (u, _flag_set(f), d, v, m, False) for u, f, d, v, m in db.execute(f"SELECT {cols} FROM msg")
                }
                state.restart_journal(top)
            elif top != since:
                facts = state.facts
                added: list[tuple[int, int, FlagState | None]] = []
                for uid, modseq in db.execute("SELECT uid, modseq FROM expunged WHERE modseq>?", (since,)):
                    facts.pop(uid, None)
                    added.append((modseq, uid, None))
                for u, f, d, v, m in db.execute(f"SELECT {cols} FROM msg WHERE modseq>?", (since,)):
                    fs = _flag_set(f)
                    facts[u] = (u, fs, d, v, m, False)
                    added.append((m, u, FlagState(u, fs, keywords_of(fs), m)))
                added.sort(key=_modseq_of)
                journal = state.journal
                journal += added
                if len(journal) > JOURNAL_KEPT:
                    cut = len(journal) - JOURNAL_KEPT // 2
                    state.journal_from = journal[cut - 1][0]
                    del journal[:cut]
            state.facts_uv = uv
            state.facts_modseq = top

    def changes_since(
        self, modseq: int, index_at: tuple[int, int] | None = None
    ) -> tuple[int, int, dict[int, FlagState | None]] | None:
        """(UIDVALIDITY, the index's highest modseq, uid -> the message's flags after its last change
        past ``modseq``, or None when it was expunged), from the shared facts' journal: what a session's
        refresh would read from the index's rows. None when the journal does not reach back that far.
        ``index_at``: the index's (UIDVALIDITY, highest modseq) as the caller has just read them."""
        state = self.state
        with state.lock:
            self._current_facts(index_at)
            if modseq < state.journal_from or modseq > state.facts_modseq:
                return None
            journal = state.journal
            start = bisect.bisect_right(journal, modseq, key=_modseq_of)
            return state.facts_uv, state.facts_modseq, {uid: st for _m, uid, st in journal[start:]}

    def _refresh_mirror(self) -> None:
        """Bring the in-memory copy of the index's uid -> file map up to date: only rows changed since
        the modseq it was taken at, plus expunges; a full read after a reset or a lost history."""
        idx = self.index
        db = idx.db
        with idx.snapshot():
            uv = idx.get_int("uidvalidity", 0)
            top = idx.get_int("highestmodseq", 1)
            self._uidnext_meta = idx.get_int("uidnext", 0)
            if (
                self._files is None
                or uv != self._mirror_uv
                or top < self._mirror_modseq
                or self._mirror_modseq < idx.get_int("expunge_floor", 0)
            ):
                self._files = dict(db.execute("SELECT uid, filename FROM msg"))
                self._split_names()
            elif top != self._mirror_modseq:
                files, fnset = self._files, self._fnset
                subs = {"cur": self._cur, "new": self._new}
                for (uid,) in db.execute("SELECT uid FROM expunged WHERE modseq>?", (self._mirror_modseq,)):
                    old = files.pop(uid, None)
                    if old is not None:
                        fnset.discard(old)
                        subs.get(old[:3], set()).discard(old[4:])
                for uid, fn in db.execute("SELECT uid, filename FROM msg WHERE modseq>?", (self._mirror_modseq,)):
                    old = files.get(uid)
                    if old != fn:
                        if old is not None:
                            fnset.discard(old)
                            subs.get(old[:3], set()).discard(old[4:])
                        files[uid] = fn
                        fnset.add(fn)
                        subs.get(fn[:3], set()).add(fn[4:])
            self._mirror_uv = uv
            self._mirror_modseq = top

    def sync(self, move_new: bool = False, force: bool = False, stamp: tuple | None = None,
             fast: bool = False) -> bool:
        """Bring the index up to date with the disk. Returns True when something was looked at.

        The common case after another session's flag change is cheap: one listing, the uidlist only when
        it changed, the index's rows changed since last time; the write transaction (with a second
        listing under its lock) is taken only when the disk and the index disagree. The sessions of
        this process on the folder do it once between them (see :class:`FolderState`).

        ``stamp``: the folder's stamp (:meth:`stamp`) as the caller took it after the changes this sync
        must see were made (an IMAP command's quiet check, at the command's start), instead of four
        more stats. Any stamp taken after them will do: an older one only makes the listing it leads
        to (which comes later) more recent than the stamp it is trusted at, which the next sync, finding
        another stamp, looks at again.

        ``fast``: the disk may wait (see ``FULL_SYNC_SECONDS``): nothing is looked at when this process
        looked at the folder less than that long ago. Changes of Dovetail's sessions are in the index
        anyway; the caller reads them there."""
        state = self.state
        if fast and not force and time.monotonic() < state.looked_until:
            return False
        with state.lock:
            looked = time.monotonic()
            changed = self._sync(move_new, force, stamp)
            state.looked_until = looked + FULL_SYNC_SECONDS
            return changed

    def looked_recently(self) -> bool:
        """Whether a fast sync (see :meth:`sync`) would look at nothing now."""
        return time.monotonic() < self.state.looked_until

    def looked_now(self) -> None:
        """The folder's stamp was just found to be the trusted one a sync left (a quiet check): as good
        as a sync's look, for the fast syncs that follow."""
        self.state.looked_until = time.monotonic() + FULL_SYNC_SECONDS

    def _sync(self, move_new: bool, force: bool, stamp: tuple | None = None) -> bool:
        if stamp is None:
            stamp = self._stamp_now()
        now = time.time()
        if not force and not (move_new and self._new_waiting(stamp, now)):
            known = self._known_unchanged(stamp, now)
            if known is True:
                return False
            if known is None and self._writer_done():
                # The index was at another stamp: most often a session of another process was changing
                # the folder (renames inside the index's write lock, the stamp moved on at its commit).
                # Once it committed, the index may vouch for the stamp now, without a listing.
                stamp = self._stamp_now()
                now = time.time()
                if not (move_new and self._new_waiting(stamp, now)) and self._known_unchanged(stamp, now):
                    return False
        if self._unchanged(move_new) or (not force and self._settled(move_new)):
            state = self.state
            state.stamp = stamp
            state.checked_at = now
            self._publish(stamp, now)
            return True
        self._sync_listed(move_new, stamp, now)
        return True

    def _known_unchanged(self, stamp: tuple, now: float) -> bool | None:
        """Whether ``stamp`` is one this process, or another one through the index, confirmed by a
        listing recently enough to be trusted (see the module docstring): nothing to look at then.
        False when the index is at ``stamp`` but no longer trusts it, None when it is at another."""
        state = self.state
        if stamp == state.stamp and trusted(stamp, state.checked_at, now):
            return True
        # Another process may have confirmed (or moved on, by a change of its own) this stamp.
        metas = self.index.get_metas("dir_stamp", "dir_checked")
        shared = metas.get("dir_stamp")
        if shared != encode(stamp):
            return None
        shared_checked = float(metas.get("dir_checked") or 0)
        if trusted(stamp, shared_checked, now):
            state.stamp, state.checked_at = stamp, shared_checked
            return True
        return False

    def _writer_done(self) -> bool:
        """Wait until no Dovetail writer holds the index's write lock (a change of the folder by a
        session of another process commits with the stamp it moved the folder to); False when the
        wait failed."""
        return self.index.db.wait_for_writers()

    def _sync_listed(self, move_new: bool, stamp: tuple, checked: float) -> None:
        """The sync by listing: number what the uidlist lacks, then, unless the index already agrees
        with the listing, plan and apply the index's changes in one write transaction."""
        self._refresh_mirror()
        if self._files:
            listing = self._list(move_new)
        else:
            # The index knows no message (the first sync of the folder): column by column when the
            # names allow it, else file by file below.
            new, cur, moved = syncapply.list_names(self.path, move_new)
            if moved:
                # Moving files out of new/ moved the directories' stamp: take it again, then list cur/
                # again after it, so that the listing may be trusted at that stamp.
                stamp, checked = self._stamp_now(), time.time()
                cur = os.listdir(self.path / "cur")
            if self._fill_usual(new, cur, moved is not None, stamp, checked, move_new):
                return
            listing = syncplan.listing_of(new, cur, moved)
        ul, by_base = self._numbered(listing)
        trust: tuple | None = stamp
        if self._unnumbered_wait:
            trust = None  # files wait for UIDs (a full disk): the next sync lists again
            self._unnumbered_wait = False
        self.load_keywords()
        if self.index.get_int("uidvalidity", 0) != ul.uidvalidity:
            syncapply.reset_index(self.index, ul)
        self._refresh_mirror()
        if self._files or not listing:
            if syncplan.agrees(listing, by_base, self._fnset, self._uidnext_meta, ul.nextuid):
                self._listed_at(trust, checked, move_new)
                return
        elif self._fill(listing, ul, by_base, stamp, checked, trust, move_new):
            return
        # Files seen for the first time are looked at before the index is locked.
        parsed = syncapply.facts_ahead(self.path, syncplan.to_parse(listing, by_base, self._files or {}))
        # The listing still holds under the lock when cur/ and new/ have not moved since a stamp no
        # change can hide behind (see _apply_locked): a moved or dirty stamp means listing again.
        dirs = (stamp[CUR], stamp[NEW])
        reuse = trust is not None and not is_dirty(dirs, checked, dirty_window(dirs))
        self.index.begin()
        try:
            now = self._stamp_now() if reuse else None
            still = listing if now is not None and (now[CUR], now[NEW]) == dirs else None
            self._apply_locked(ul, by_base, parsed, still)
            self.index.commit()
        except BaseException:
            self.index.rollback()
            self._files = None
            raise
        self._refresh_mirror()
        self._listed_at(self._stamp_now() if trust else None, checked, move_new)

    def _fill(
        self, listing: dict[str, Listed], ul: uidlist.Uidlist, by_base: dict[str, int], stamp: tuple,
        checked: float, trust: tuple | None, move_new: bool,
    ) -> bool:
        """The first sync of a folder whose index knows no message (a fresh or rebuilt index): every
        numbered file becomes a row in one bulk insert, and this process's copies of the uid -> file
        map and of the facts are made from those rows instead of being read back. False, having
        changed nothing, when that does not apply after all (under the index's write lock: another
        writer indexed something meanwhile, or the directories no longer hold what was listed): the
        usual sync does the work then."""
        rows = syncapply.first_rows(self.path, listing, by_base, self.keywords)
        if not rows:
            return False
        listed_cur = {item.filename for item in listing.values() if item.sub == "cur"}
        listed_new = {item.filename for item in listing.values() if item.sub == "new"}

        def same(cur: list[str], new: list[str]) -> bool:
            return (
                {fn for fn in cur if not fn.startswith(".")} == listed_cur
                and {fn for fn in new if not fn.startswith(".")} == listed_new
            )

        def adopt(modseq: int, uidnext: int) -> None:
            self._adopt_first(rows, modseq, ul.uidvalidity, uidnext)

        return self._insert_first(rows, ul, stamp, checked, trust, move_new, same, adopt)

    def _fill_usual(
        self, new: list[str], cur: list[str], moved: bool, stamp: tuple, checked: float, move_new: bool
    ) -> bool:
        """:meth:`_fill`, column by column (see :mod:`~dovetail.maildir.firstfill`), for a folder whose
        files are all in ``cur/`` (``moved``: those of ``new/`` were just moved there) under names of
        the usual form, not numbered yet or all numbered. False, having changed nothing in the index,
        when that is not the case: :meth:`_fill` and the usual sync do the work then."""
        if not moved and any(not fn.startswith(".") for fn in new):
            return False  # files wait in new/ (EXAMINE leaves them there)
        cols = firstfill.usual_names(cur)
        if cols is None:
            return False
        ul, by_base = self._cached_uidlist()
        uids: Sequence[int]
        if ul is not None and ul.entries:
            known = firstfill.uids_known(cols, by_base)
            if known is None:
                return False  # some are numbered, some not: the usual numbering (and relisting)
            cols, uids = firstfill.in_uid_order(cols, known)
        else:
            try:
                numbered = firstfill.number_all(self.path, cols, self._new_uidvalidity)
            except OSError:
                return False  # the usual numbering tries again and knows what a full disk allows
            if numbered is None:
                return False
            ul = numbered
            uids = range(ul.nextuid - len(cols.bases), ul.nextuid)
        self.load_keywords()
        if self.index.get_int("uidvalidity", 0) != ul.uidvalidity:
            syncapply.reset_index(self.index, ul)
            self._refresh_mirror()
        listed = set(cur)

        def same(cur_now: list[str], new_now: list[str]) -> bool:
            return set(cur_now) == listed and not any(not fn.startswith(".") for fn in new_now)

        filenames, flags = firstfill.columns(cols, self.keywords)
        rows = firstfill.Rows(cols, uids, filenames, flags)

        def adopt(modseq: int, uidnext: int) -> None:
            assert ul is not None
            self._adopt_columns(uids, filenames, flags, cols.vsizes, repeat(DATE_UNKNOWN), listed, modseq,
                                ul.uidvalidity, uidnext)

        return self._insert_first(rows, ul, stamp, checked, stamp, move_new, same, adopt)

    def _insert_first(
        self, rows: Iterable[tuple], ul: uidlist.Uidlist, stamp: tuple, checked: float, trust: tuple | None,
        move_new: bool, same: Callable[[list[str], list[str]], bool], adopt: Callable[[int, int], None],
    ) -> bool:
        """Insert the first ``rows`` of an index with no message (see :meth:`_fill`) and make this
        process's copies from them; False, having changed nothing, when the index has changed or the
        directories no longer hold what was listed (``same`` compares a new listing of ``cur/`` and
        ``new/`` with it); ``adopt(modseq, uidnext)`` makes the copies."""
        seen_modseq = self._mirror_modseq
        idx = self.index
        idx.begin()
        try:
            if (
                idx.get_int("highestmodseq", 1) != seen_modseq
                or idx.get_int("uidvalidity", 0) != ul.uidvalidity
                or idx.db.execute("SELECT 1 FROM msg LIMIT 1").fetchone() is not None
                or not self._listing_holds(stamp, checked, trust, same)
            ):
                idx.rollback()
                return False
            modseq = syncapply.insert_first(idx, rows, ul.nextuid)
            uidnext = idx.get_int("uidnext", 0)
            idx.commit()
        except BaseException:
            idx.rollback()
            self._files = None
            raise
        adopt(modseq, uidnext)
        self._listed_at(self._stamp_now() if trust else None, checked, move_new)
        return True

    def _listing_holds(
        self, stamp: tuple, checked: float, trust: tuple | None, same: Callable[[list[str], list[str]], bool]
    ) -> bool:
        """Under the index's write lock: whether a listing taken before it is still what ``cur/`` and
        ``new/`` hold (see :meth:`_apply_locked` for why that matters): their stamp did not move since a
        clean one, or (a stamp that may hide a change) ``same`` finds their names listed again to be
        the ones listed then."""
        dirs = (stamp[CUR], stamp[NEW])
        now = self._stamp_now()
        if (now[CUR], now[NEW]) != dirs:
            return False
        if trust is not None and not is_dirty(dirs, checked, dirty_window(dirs)):
            return True
        try:
            cur = os.listdir(self.path / "cur")
            new = os.listdir(self.path / "new")
        except FileNotFoundError:
            return False
        return same(cur, new)

    def _adopt_first(self, rows: list[tuple], modseq: int, uidvalidity: int, uidnext: int) -> None:
        """Make this process's copies of the index (the uid -> file map, the facts) from the rows just
        committed by :meth:`_fill`: the index held nothing else at that modseq."""
        uids, _bases, fns, _infos, flags, _sizes, vsizes, idates = zip(*rows, strict=True)
        self._adopt_columns(uids, fns, flags, vsizes, idates, None, modseq, uidvalidity, uidnext)

    def _adopt_columns(
        self, uids: Sequence[int], fns: Sequence[str], flags: Sequence[str], vsizes: Iterable[int],
        idates: Iterable[float], cur: set[str] | None, modseq: int, uidvalidity: int, uidnext: int,
    ) -> None:
        """:meth:`_adopt_first` from the rows' columns, with the loops in ``map``/``zip`` (see
        :mod:`~dovetail.maildir.firstfill`); ``cur``: the names in ``cur/`` when every file is there."""
        state = self.state
        state.files = dict(zip(uids, fns, strict=True))
        state.fnset = set(fns)
        if cur is not None:
            state.cur, state.new = cur, set()
        else:
            state.cur = {fn[4:] for fn in fns if fn[:4] == "cur/"}
            state.new = {fn[4:] for fn in fns if fn[:4] == "new/"}
        state.mirror_modseq = modseq
        state.mirror_uv = uidvalidity
        state.uidnext_meta = uidnext
        state.facts = _facts_of(uids, flags, idates, vsizes, repeat(modseq))
        state.facts_modseq = modseq
        state.facts_uv = uidvalidity
        state.restart_journal(modseq)

    def _numbered(self, listing: dict[str, Listed]) -> tuple[uidlist.Uidlist, dict[str, int]]:
        """The uidlist (and its basename map) numbering every file in ``listing``."""
        ul, by_base = self._cached_uidlist()
        if ul is None or any(b not in by_base for b in listing):
            try:
                ul = self.assign_uids(syncplan.unnumbered(listing, by_base), listing)
            except OSError as exc:
                # A full disk cannot take their UIDs: the numbered files are served, the others wait
                # (left out of the listing) for a sync with room, as Dovecot does.
                if ul is None or not is_disk_full(exc):
                    raise
                for base in [b for b in listing if b not in by_base]:
                    del listing[base]
                self._unnumbered_wait = True
                return ul, by_base
            by_base = self._by_base_of(ul)
        return ul, by_base

    def _apply_locked(
        self, ul: uidlist.Uidlist, by_base: dict[str, int], parsed: dict[int, dict | None],
        listing: dict[str, Listed] | None = None,
    ) -> None:
        """Plan and apply the index's changes, inside its write transaction. ``listing``: one taken
        before the lock that still holds (the directories' stamp, clean, did not move since)."""
        # List again under the index's write lock: a flag change by another of our sessions renames
        # files and updates the index inside that lock, so a listing taken before it could write
        # stale flags back (a lost update). New files unknown to the uidlist wait for the next sync.
        if listing is None:
            listing = self._list(False)
        if any(b not in by_base for b in listing):
            # Another writer numbered files since our uidlist read (and may have indexed them).
            newer, newer_by_base = self._cached_uidlist()
            if newer is not None and newer.uidvalidity == ul.uidvalidity:
                ul, by_base = newer, newer_by_base
        self._refresh_mirror_locked()
        plan = syncplan.plan(
            listing, by_base, self._files or {}, self.keywords, self.index.get_int("uidnext", 0), ul.nextuid
        )
        syncapply.apply_plan(self.index, self.path, plan, parsed)

    def _listed_at(self, stamp: tuple | None, checked: float, move_new: bool) -> None:
        """A listing at ``checked`` found the directories at ``stamp`` matching the index: trust the
        stamp from now on, unless files are waiting in ``new/`` to be moved."""
        state = self.state
        state.stamp = stamp if not move_new or not self._has_new() else None
        state.checked_at = checked
        if state.stamp is not None:
            self._publish(state.stamp, checked)

    def index_placed(
        self, placed: Sequence[tuple[int, str, str, dict]], uidvalidity: int, before: tuple | None = None
    ) -> bool:
        """Index messages ``(uid, basename, info, facts)`` this process has just placed in ``cur/`` and
        numbered, so that the next sync finds the disk and the index agreeing (a listing, no parse, no
        write) instead of analysing the files again: in one transaction and one modseq, all of them or
        none. False when the index is of another UIDVALIDITY, or another writer has indexed, renamed or
        expunged one of them meanwhile: a sync then does the work as usual."""
        rows = []
        for uid, basename, info, facts in placed:
            stored_fn = f"cur/{basename}{INFO_SEP}{info}"
            try:
                st = os.stat(self.path / stored_fn)
            except FileNotFoundError:
                return False
            rows.append((uid, stored_fn, info, dict(facts, size=st.st_size, idate=st.st_mtime)))
        if not rows:
            return False
        idx = self.index
        db = idx.db
        idx.begin()
        try:
            if idx.get_int("uidvalidity", 0) != uidvalidity or any(
                db.execute("SELECT 1 FROM msg WHERE uid=?", (uid,)).fetchone() is not None
                or db.execute("SELECT 1 FROM expunged WHERE uid=?", (uid,)).fetchone() is not None
                or not os.path.exists(self.path / stored_fn)
                for uid, stored_fn, _info, _facts in rows
            ):
                idx.rollback()
                return False
            modseq = idx.bump_modseq()
            for uid, stored_fn, info, facts in rows:
                syncapply.insert_row(idx, uid, stored_fn, info, self.flags_of(info), modseq, facts)
            top = max(uid for uid, *_rest in rows)
            if top + 1 > idx.get_int("uidnext", 0):
                idx.set_meta("uidnext", top + 1)
            self.own_change(before, self._stamp_now(), frozenset((CUR, UIDLIST_STAMP)))
            idx.commit()
        except BaseException:
            idx.rollback()
            self.invalidate()
            raise
        return True

    def _refresh_mirror_locked(self) -> None:
        """Like :meth:`_refresh_mirror`, inside the caller's write transaction."""
        idx = self.index
        db = idx.db
        top = idx.get_int("highestmodseq", 1)
        if self._files is None or top < self._mirror_modseq or self._mirror_modseq < idx.get_int("expunge_floor", 0):
            self._files = dict(db.execute("SELECT uid, filename FROM msg"))
        elif top != self._mirror_modseq:
            for (uid,) in db.execute("SELECT uid FROM expunged WHERE modseq>?", (self._mirror_modseq,)):
                self._files.pop(uid, None)
            for uid, fn in db.execute("SELECT uid, filename FROM msg WHERE modseq>?", (self._mirror_modseq,)):
                self._files[uid] = fn
        self._split_names()
        self._mirror_modseq = top

    def _split_names(self) -> None:
        files = self._files or {}
        self._fnset = set(files.values())
        self._cur = {fn[4:] for fn in self._fnset if fn.startswith("cur/")}
        self._new = {fn[4:] for fn in self._fnset if fn.startswith("new/")}

    def _unchanged(self, move_new: bool) -> bool:
        """True when the directories hold exactly the files the index knows (compared as sets of
        names, without parsing any) and the uidlist adds nothing: the common case after another
        session's change, which that session already wrote to the index."""
        ul, _by_base = self._cached_uidlist()
        if ul is None:
            return False  # a folder never numbered: nothing to compare a listing with
        try:
            cur = os.listdir(self.path / "cur")
            new = os.listdir(self.path / "new")
        except FileNotFoundError:
            return False
        if move_new and new:
            return False
        self._refresh_mirror()
        return (
            self._mirror_uv == ul.uidvalidity
            and self._uidnext_meta >= ul.nextuid
            and set(cur) == self._cur
            and set(new) == self._new
        )

    def _settled(self, move_new: bool) -> bool:
        """:meth:`_unchanged` once more after waiting for the index's write lock: a flag change or
        expunge by a session of another process renames or removes files inside that lock, so the
        directories and the index disagree only until it commits; waiting for it costs less than
        listing and comparing every file."""
        return self._writer_done() and self._unchanged(move_new)

    def _new_waiting(self, stamp: tuple, now: float) -> bool:
        """:meth:`_has_new`, without a listing while ``new/`` is at a stamp of its own at which a listing
        found it empty and that no change can hide behind (see :mod:`~dovetail.maildir.stamps`): a file
        arriving there moves the directory's stamp. Every refresh of every session asks."""
        state = self.state
        part = stamp[NEW]
        if part is not None and part == state.new_empty:
            return False
        if self._has_new():
            return True
        # Only a stamp older than the dirty window is remembered: a delivery in the clock tick of the
        # directory's time, after this listing, would not have moved it.
        if part is not None and not is_dirty((part,), now, dirty_window((part,))):
            state.new_empty = part
        return False

    def _has_new(self) -> bool:
        try:
            with os.scandir(self.path / "new") as it:
                return any(not e.name.startswith(".") for e in it)
        except FileNotFoundError:
            return False

    # --- writing ------------------------------------------------------------------------------

    def write_tmp(self, data: bytes, internal_date: float | None) -> tuple[Path, str]:
        """Write a message durably into ``tmp/`` (dated ``internal_date``): its path there and basename."""
        lf = data.replace(b"\r\n", b"\n")
        vsize = len(to_crlf(lf))
        base = new_basename(len(lf), vsize)
        tmp = self.path / "tmp" / base
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, self.file_mode())
        try:
            try:
                write_fsync(fd, lf)
            finally:
                os.close(fd)
        except BaseException:
            tmp.unlink(missing_ok=True)  # nothing half-written stays behind (a full disk)
            raise
        if internal_date is not None:
            os.utime(tmp, (internal_date, internal_date))
        return tmp, base

    def _fsync_cur(self) -> None:
        dfd = os.open(self.path / "cur", os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def file_mode(self) -> int:
        """New files take the folder directory's permission bits (less execute), as with Dovecot, so
        an operator who shares a Maildir through group permissions gets group-readable mail."""
        try:
            return os.stat(self.path).st_mode & 0o666
        except OSError:
            return 0o600

    def clean_tmp(self, max_age: float | None = None) -> int:
        """Remove files left in ``tmp/`` by writers that died (Dovecot uses the same 36 hours).

        Old by access *and* change time, as Dovecot judges: a writer may give its file an old date on
        purpose (APPEND's internal date is set before the rename) or link an old file in (COPY), and
        only the change time, which nobody can set, says the entry itself is new."""
        removed = 0
        cutoff = time.time() - (TMP_MAX_AGE if max_age is None else max_age)
        try:
            with os.scandir(self.path / "tmp") as it:
                for entry in it:
                    try:
                        if not entry.is_file(follow_symlinks=False):
                            continue
                        st = entry.stat(follow_symlinks=False)
                        if st.st_atime < cutoff and st.st_ctime < cutoff:
                            os.unlink(entry.path)
                            removed += 1
                    except FileNotFoundError:
                        continue
        except FileNotFoundError:
            pass
        return removed

    def link_to_tmp(self, source: Path, size: int, vsize: int) -> tuple[Path, str] | None:
        """Hard-link ``source`` into ``tmp/`` under a new name (COPY): its path there and basename; None
        when linking fails."""
        base = new_basename(size, vsize)
        try:
            os.link(source, self.path / "tmp" / base)
        except OSError:
            return None
        return self.path / "tmp" / base, base

    def place_staged(
        self, staged: Sequence[tuple[Path, str, str, dict]], synced: bool, refusal: str
    ) -> tuple[dict[str, int], int, bool]:
        """Move files staged in ``tmp/`` (``(path, basename, info, facts)``, each written or linked there)
        into ``cur/``, number them in this order and index them, under the index's writer lock: no
        session of the folder then finds them in ``cur/`` unknown to the index without a writer to wait
        for (it would list the whole folder to find them). ``facts`` are the parsed columns (APPEND
        analysed its message) or ``{"vsize": 0}`` (the vsize comes from the name; the rest is parsed on
        first need). ``synced``: the staged data is on disk (written here, not linked), so ``cur/`` is
        synced, after the lock. Returns basename -> UID, the UIDVALIDITY and whether the rows went
        into the index (else a sync does it). If a rename or the numbering fails, nothing stays; on a full disk
        :class:`DiskFull` is raised with ``refusal``."""
        moved: list[tuple[str, str, dict]] = []
        try:
            with self.index.db.holding_writer():
                before = self._stamp_now()
                try:
                    for tmp, base, info, facts in staged:
                        os.rename(tmp, self.path / "cur" / f"{base}{INFO_SEP}{info}")
                        moved.append((base, info, facts))
                    ul = self.assign_uids([b for b, _i, _f in moved], None)
                except OSError as exc:
                    self.take_back([b for b, _i, _f in moved])
                    moved.clear()
                    if is_disk_full(exc):
                        raise DiskFull(refusal) from exc
                    raise
                by_base = self._by_base_of(ul)
                indexed = self.index_placed([(by_base[b], b, info, facts) for b, info, facts in moved],
                                            ul.uidvalidity, before)
        finally:
            for tmp, _base, _info, _facts in staged[len(moved):]:
                tmp.unlink(missing_ok=True)
        if synced:
            self._fsync_cur()
        return {b: by_base[b] for b, _i, _f in moved}, ul.uidvalidity, indexed

    def append_message(self, data: bytes, info: str, internal_date: float | None) -> tuple[int, int, bool]:
        """Write, number and index one message: (uid, uidvalidity, indexed). The file is written and
        synced in ``tmp/`` and analysed outside any lock, then placed (:meth:`place_staged`)."""
        refusal = "Not enough disk space: the message was not stored"
        try:
            tmp, base = self.write_tmp(data, internal_date)
        except OSError as exc:
            if is_disk_full(exc):
                raise DiskFull(refusal) from exc
            raise
        facts = analyse(data.replace(b"\r\n", b"\n"))
        placed, uidvalidity, indexed = self.place_staged([(tmp, base, info, facts)], True, refusal)
        return placed[base], uidvalidity, indexed

    def take_back(self, basenames: list[str]) -> None:
        """Remove files this process wrote into the folder that were never numbered."""
        wanted = set(basenames)
        for sub in ("cur", "new"):
            for name in os.listdir(self.path / sub):
                if name.split(INFO_SEP, 1)[0] in wanted:
                    (self.path / sub / name).unlink(missing_ok=True)

    def info_for(self, flags: set[str]) -> str:
        from dovetail.storage.api import SYSTEM_FLAGS

        system = frozenset(f for f in flags if f in SYSTEM_FLAGS)
        kws = {f for f in flags if f not in SYSTEM_FLAGS}
        return info_string(system, self.letters_for(kws))

    def close(self) -> None:
        """Give the index connection back to the folder's state for the process's next user of the
        folder, or close it when this was the last user (see :mod:`~dovetail.maildir.folderstate`)."""
        if not self._closed:
            self._closed = True
            if self._shared:
                release_state(self.path, self.state, self.index.detach())
                return
        self.index.close()


def _facts_of(
    uids: Iterable[int], flags: Sequence[str], idates: Iterable[float], vsizes: Iterable[int], modseqs: Iterable[int]
) -> dict[int, tuple[int, frozenset[str], float, int, int, bool]]:
    """The shared facts (see :meth:`Folder.with_facts`) of index rows given column by column: built
    with ``zip``, whose loop runs in C."""
    sets = {column: _flag_set(column) for column in set(flags)}
    facts = zip(uids, map(sets.__getitem__, flags), idates, vsizes, modseqs, repeat(False), strict=False)
    return dict(zip(uids, facts, strict=True))


_FLAG_SETS: dict[str, frozenset[str]] = {}
_modseq_of = itemgetter(0)  # of a journal entry
_KEYWORD_SETS: dict[frozenset[str], frozenset[str]] = {}


def keywords_of(flags: frozenset[str]) -> frozenset[str]:
    """The keywords of a flag set, built once per distinct set (shared by the folder's facts and its
    views, so equal sets are one object)."""
    hit = _KEYWORD_SETS.get(flags)
    if hit is None:
        hit = frozenset(f for f in flags if f[0] != "\\")
        if len(_KEYWORD_SETS) >= 4096:
            _KEYWORD_SETS.clear()
        _KEYWORD_SETS[flags] = hit
    return hit


def _flag_set(column: str) -> frozenset[str]:
    """The flags of a flags column; a mailbox has few distinct combinations, so each is built once."""
    hit = _FLAG_SETS.get(column)
    if hit is None:
        hit = frozenset(column.split())
        if len(_FLAG_SETS) >= 4096:
            _FLAG_SETS.clear()
        _FLAG_SETS[column] = hit
    return hit
