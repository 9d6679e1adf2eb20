"""A selected Maildir mailbox: one session's view over a :class:`Folder` (see the storage API)."""

from __future__ import annotations

import bisect
import contextlib
import functools
import math
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from operator import attrgetter
from pathlib import Path

from dovetail.maildir import lazyfacts
from dovetail.maildir.diskfull import is_disk_full
from dovetail.maildir.filename import parse_name
from dovetail.maildir.flagstore import FileMoved, FlagPlan, Outcome, rename_to, store_rows
from dovetail.maildir.folder import CUR, MAX_MESSAGE_BYTES, NEW, Folder, keywords_of
from dovetail.maildir.index import DATE_UNKNOWN, EXPUNGE_DATA_KEPT, flags_load, loads
from dovetail.maildir.keywords import valid_keyword
from dovetail.maildir.messagecache import HEADER_FIELDS, IMAP_DATA, MESSAGES, PART_TREES, TEXTS
from dovetail.maildir.messagefacts import analyse, header_block
from dovetail.maildir.searchtext import flush_store, store_for
from dovetail.maildir.stamps import trusted_until
from dovetail.maildir.watch import watch_folder
from dovetail.mime.parser import Part, parse_header, to_crlf
from dovetail.mime.sections import FieldIndex, apply_partial, extract, filter_fields, parse_section
from dovetail.mime.text import body_text, fold_case
from dovetail.storage.api import (
    DELETED,
    RECENT,
    SEEN,
    SYSTEM_FLAGS,
    Changes,
    CopyResult,
    DiskFull,
    FlagState,
    InvalidFlag,
    Mailbox,
    MailboxWatcher,
    MessageExpunged,
    MessageInfo,
    MessageTooLarge,
    NotInMemory,
    ReadOnlyMailbox,
    Section,
    StoreMode,
    StoreResult,
)


def clean_flags(flags: Iterable[str]) -> set[str]:
    out: set[str] = set()
    for f in flags:
        if f.startswith("\\"):
            canon = next((s for s in SYSTEM_FLAGS if s.lower() == f.lower()), None)
            if canon is None:
                if f.lower() == RECENT.lower():
                    continue
                raise InvalidFlag(f"unknown system flag {f[:40]!r}")
            out.add(canon)
        elif valid_keyword(f):
            out.add(f)
        else:
            raise InvalidFlag(f"invalid keyword {f[:40]!r}")
    return out


_MANY_ROWS = 200  # above this many UIDs, the shared facts (or one pass over the table) beat an IN (...) list
# From this many UIDs, a FETCH of ENVELOPE/BODYSTRUCTURE/BODY reads the shared facts and the cached IMAP
# bytes rather than the index's rows (bringing the facts up to date costs a few statements).
_CACHED_ROWS = 8
HEADER_CACHE_MAX = 50_000  # header field values kept per folder and process for SEARCH/SORT/THREAD
_FLAG_SETS: dict[str, tuple[frozenset[str], frozenset[str]]] = {}


def _flag_sets(column: str) -> tuple[frozenset[str], frozenset[str]]:
    """(flags, keywords) of a flags column; a mailbox has few distinct combinations, so they are
    built once per process."""
    hit = _FLAG_SETS.get(column)
    if hit is None:
        flags = frozenset(column.split())
        hit = (flags, frozenset(f for f in flags if f[0] != "\\"))
        if len(_FLAG_SETS) >= 4096:
            _FLAG_SETS.clear()
        _FLAG_SETS[column] = hit
    return hit


_uid_of = attrgetter("uid")


@functools.lru_cache(maxsize=4096)
def _date_of(stamp: float) -> datetime:
    """A message's internal date from its index timestamp (a FETCH of a page asks for the same few
    hundred again and again; datetimes are immutable)."""
    return datetime.fromtimestamp(max(stamp, 0), UTC)


def _tree_to_part(node: list) -> Part:
    from dovetail.mime.parser import ContentType, Header

    hs, bs, end, kind, kids = node
    ctype = ContentType("multipart", "mixed") if kind == "m" else ContentType()
    part = Part(hs, bs, end, Header(), ctype)
    if kind == "m":
        part.children = [_tree_to_part(k) for k in kids]
    elif kind == "r":
        part.message = _tree_to_part(kids[0])
    return part


def _with_parsed(row: tuple, names: list[str], facts: dict) -> tuple:
    """``row`` (columns ``names``) with its parsed columns, and its date where unknown, from ``facts``."""
    out = list(row)
    for i in range(5, len(names)):
        out[i] = facts[names[i]]
    if out[4] == DATE_UNKNOWN and facts.get("idate") is not None:
        out[4] = facts["idate"]
    return tuple(out)


class MaildirMailbox(Mailbox):
    def __init__(
        self,
        folder: Folder,
        name: str,
        readonly: bool,
        resolve: Callable[[str], Folder],
        max_append: int = MAX_MESSAGE_BYTES,
    ) -> None:
        self.folder = folder
        self.name = name
        self.readonly = readonly
        self._resolve = resolve
        self._max_append = max_append
        self._uids: list[int] = []
        self._modseqs: dict[int, int] = {}
        self._recent: set[int] = set()
        self._pending_expunge: set[int] = set()  # expunged on disk, not yet reported to the client
        self._gone: set[int] = set()  # UIDs this view has served from the expunge history
        self._seen_modseq = 0  # the index's highest modseq this view has taken in
        self._facts_memo: tuple[tuple, list] | None = None  # see message_facts
        self._watcher: MailboxWatcher | None = None
        self._quiet: tuple[tuple | None, int, int, float, float] | None = None  # see refresh_if_quiet
        self._probe: tuple | None = None  # the folder's stamp as this command's quiet check took it
        self._memory_only = False  # see memory_reads
        version = self._data_version()
        folder.sync(move_new=not readonly)
        if not readonly:
            folder.clean_tmp()
        self._uidvalidity = folder.index.get_int("uidvalidity")
        self._load(claim_recent=True)
        self._note_refreshed(version)

    # --- state --------------------------------------------------------------------------------

    def _load(self, claim_recent: bool) -> dict[int, int]:
        idx = self.folder.index

        def take(facts: dict) -> dict[int, int]:
            # The folder's shared facts are as of one snapshot's modseq (no SQLite rows to read).
            self._seen_modseq = self.folder.state.facts_modseq
            return {u: t[4] for u, t in facts.items()}

        rows = self.folder.with_facts(take)
        if claim_recent and self.readonly:
            # EXAMINE shows which messages are recent without taking them: the next SELECT still
            # sees them as \Recent (as Dovecot does).
            first = idx.get_int("first_recent_uid", 1)
            self._recent.update(u for u in rows if u >= first)
        elif claim_recent:
            idx.begin()
            try:
                first = idx.get_int("first_recent_uid", 1)
                nxt = idx.get_int("uidnext", 1)
                self._recent.update(u for u in rows if u >= first)
                if nxt > first:
                    idx.set_meta("first_recent_uid", nxt)
                idx.commit()
            except BaseException:
                idx.rollback()
                raise
        if not self._uids:
            self._uids = sorted(rows)
            self._modseqs = rows
        return rows

    @property
    def uidvalidity(self) -> int:
        return self._uidvalidity

    @property
    def uidnext(self) -> int:
        return max(self.folder.index.get_int("uidnext", 1), (self._uids[-1] + 1) if self._uids else 1)

    @property
    def highestmodseq(self) -> int:
        return self.folder.index.get_int("highestmodseq", 1)

    @property
    def uids(self) -> Sequence[int]:
        return self._uids

    @property
    def recent_count(self) -> int:
        return len(self._recent)

    def seq_of(self, uid: int) -> int | None:
        i = bisect.bisect_left(self._uids, uid)
        return i + 1 if i < len(self._uids) and self._uids[i] == uid else None

    def _in_view(self, uids: Iterable[int]) -> set[int]:
        """The UIDs of ``uids`` in this view; a few are looked up by bisection (FETCH of one message
        would otherwise make a set of the whole view)."""
        wanted = set(uids)
        if len(wanted) * 16 < len(self._uids):
            return {u for u in wanted if self.seq_of(u) is not None}
        return wanted & set(self._uids)

    def first_unseen_seq(self) -> int | None:
        uids = self._uids

        def first(facts: dict) -> int | None:
            for i, uid in enumerate(uids):
                t = facts.get(uid)
                if t is None or SEEN not in t[1]:
                    return i + 1
            return None

        return self.folder.with_facts(first)

    # --- refresh ------------------------------------------------------------------------------

    def command_started(self) -> None:
        """A stamp a quiet check took before this command is too old for the refresh after it."""
        self._probe = None

    def refresh(self, *, allow_expunges: bool = True, fast: bool = False) -> Changes:
        """What changed since the last refresh: read from the index only the rows whose modseq moved
        past the one this view last saw, and the expunges recorded since (all rows when that history
        is gone).

        The sync starts from the stamp this command's quiet check (:meth:`refresh_if_quiet`) took, if
        it took one: a change made before the command started shows in it (see ``Folder.sync``).
        ``fast``: the folder's files are looked at only if the last look is old (``Folder.sync``)."""
        self._quiet = None
        probe, self._probe = self._probe, None
        changes, version = self._refresh(allow_expunges, probe, fast)
        if not changes.uidvalidity_changed:
            self._note_refreshed(version)
        return changes

    def refresh_if_quiet(self, *, fast: bool = False) -> Changes | None:
        """What :meth:`refresh` would find when it would find nothing, told without a thread: the
        folder's stamp (four stats) is still the one the last refresh saw and a listing confirmed
        (trusted, as a sync trusts it), this view's index connection wrote nothing since, and, when
        that stamp is dirty (see :mod:`~dovetail.maildir.stamps`), no other connection committed
        (``PRAGMA data_version``, read from the index's shared memory) or, if one did, the index's
        modseq did not move (one read of the ``meta`` table, from pages already in memory: a WAL
        reader never waits for writers). None when any of that does not hold; the stamp it took is
        kept for the refresh that follows in the same command (see :meth:`command_started`).

        A clean stamp needs no ``data_version``: every Dovetail writer that moves the index's modseq
        or UIDVALIDITY changes a stamped file first (a flag change renames in ``cur/`` or out of
        ``new/``, an expunge unlinks, APPEND and COPY write into ``cur/`` and the uidlist, a sync
        records what others changed on disk, a new UIDVALIDITY comes with a new uidlist), and a change
        made after the listing that confirmed a clean stamp gives the file a time past the stamp's
        newest, so the stamp moves. Only a change in the clock tick of a dirty stamp can leave it as
        it was; Dovecot's and deliveries' changes in that tick wait for the dirty window, as in a sync.

        ``fast`` (as :meth:`refresh`): when the folder was looked at recently, no stamp is taken and
        only the index tells; as if the stamp were dirty."""
        quiet = self._quiet
        if quiet is None or self._pending_expunge:
            return None
        folder = self.folder
        if fast and folder.looked_recently():
            return self._index_quiet(quiet, None)
        state = folder.state
        if not state.lock.acquire(blocking=False):
            return None  # a sync is under way in another session of this process
        try:
            stamp = self._probe = folder.stamp()
            if stamp != quiet[0] or stamp != state.stamp:
                return None
            if state.checked_at != quiet[3]:
                quiet = self._quiet = (*quiet[:3], state.checked_at, trusted_until(stamp, state.checked_at))
            if time.time() >= quiet[4]:
                return None
            folder.looked_now()
        finally:
            state.lock.release()
        return self._index_quiet(quiet, stamp)

    def _index_quiet(self, quiet: tuple, stamp: tuple | None) -> Changes | None:
        """The index's part of :meth:`refresh_if_quiet`: this connection wrote nothing since, and, for a
        dirty stamp or none (``stamp`` None: not taken), no other connection committed a change of the
        modseq or UIDVALIDITY."""
        db = self.folder.index.db
        if db.in_memory:
            return None
        conn = db.conn
        try:
            if conn.total_changes != quiet[2]:
                return None
            if stamp is not None and quiet[4] == math.inf:
                return Changes(recent_count=len(self._recent))
            version = conn.execute("PRAGMA data_version").fetchone()[0]
            if version != quiet[1]:
                metas = dict(conn.execute(
                    "SELECT key, value FROM meta WHERE key IN ('uidvalidity', 'highestmodseq')").fetchall())
                if (int(metas.get("uidvalidity", 0)) != self._uidvalidity
                        or int(metas.get("highestmodseq", 1)) != self._seen_modseq):
                    return None
                self._quiet = (quiet[0] if stamp is None else stamp, version, *quiet[2:])
        except sqlite3.Error:
            return None
        return Changes(recent_count=len(self._recent))

    def _data_version(self) -> int | None:
        """``PRAGMA data_version`` of the index: it moves when another connection commits. None for
        an index kept in memory (nothing tells it of other writers)."""
        db = self.folder.index.db
        if db.in_memory:
            return None
        try:
            return int(db.conn.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error:
            return None

    def _note_refreshed(self, version: int | None) -> None:
        """A refresh (or the select) brought the view up to date with the index as of ``version`` and
        the folder's trusted stamp: what :meth:`refresh_if_quiet` compares against."""
        db = self.folder.index.db
        state = self.folder.state
        stamp = state.stamp
        if version is None or db.in_memory:
            self._quiet = None
        elif stamp is None:
            # The disk is not vouched for (another process changed the folder since this one looked):
            # only a fast check, which asks the index alone, can find this view quiet.
            self._quiet = (None, version, db.conn.total_changes, 0.0, 0.0)
        else:
            # The stamp's trust is worked out once, not at each NOOP (see stamps.trusted_until).
            checked = state.checked_at
            self._quiet = (stamp, version, db.conn.total_changes, checked, trusted_until(stamp, checked))

    def memory_reads(self, *, fast: bool = False) -> AbstractContextManager[Changes] | None:
        """Reads from the folder's shared facts (as they are: no statement brings them up to date) and
        the process's message caches only, while the view is quiet (see :meth:`refresh_if_quiet`) and
        the facts are as of the modseq it last took in: then they are as current as the index."""
        if self._memory_only:
            return None
        quiet = self.refresh_if_quiet(fast=fast)
        if quiet is None:
            return None
        state = self.folder.state
        if state.facts is None or state.facts_uv != self._uidvalidity or state.facts_modseq != self._seen_modseq:
            # Behind (a STORE commits without touching them): brought up to date here, from the rows
            # that moved, unless another thread holds them; a refresh does not, nor a FETCH of a few.
            if not state.lock.acquire(blocking=False):
                return None
            try:
                self.folder.with_facts(len)
            except sqlite3.Error:
                return None
            finally:
                state.lock.release()
            if state.facts_uv != self._uidvalidity or state.facts_modseq != self._seen_modseq:
                return None
        return self._memory_scope(quiet)

    @contextmanager
    def _memory_scope(self, quiet: Changes) -> Iterator[Changes]:
        self._memory_only = True
        try:
            yield quiet
        finally:
            self._memory_only = False

    def _memory_fact_rows(self, wanted: set[int]) -> list[tuple]:
        """:meth:`_fact_rows` inside :meth:`memory_reads`: the shared facts as they stand, without the
        statements that bring them up to date and without waiting for their lock."""
        state = self.folder.state
        if not state.lock.acquire(blocking=False):
            raise NotInMemory("the folder's facts are being updated")
        try:
            facts = state.facts
            if facts is None or state.facts_uv != self._uidvalidity or state.facts_modseq != self._seen_modseq:
                raise NotInMemory("the folder's facts moved")
            view = self._uids if len(wanted) * 4 > len(self._uids) else sorted(wanted)
            get = facts.get
            known = self._modseqs
            out = []
            for uid in view:
                if uid in wanted:
                    t = get(uid)
                    # Older than this view's own knowledge of the message: a STORE of this session that
                    # the facts have not taken in yet.
                    if t is None or t[4] < known.get(uid, 0):
                        raise NotInMemory("a message is not in the facts")
                    out.append((uid, t[1], t[4], t[3], t[2]))
        finally:
            state.lock.release()
        if len(out) < len(wanted):
            raise NotInMemory("a message is not in the view")
        return out

    def _refresh(self, allow_expunges: bool, stamp: tuple | None, fast: bool = False) -> tuple[Changes, int | None]:
        """The changes, and the index's ``data_version`` read with the first of what they were read
        from (a commit after it shows next time)."""
        self.folder.sync(move_new=not self.readonly, stamp=stamp, fast=fast)
        changes = Changes()
        idx = self.folder.index
        view = self._modseqs
        # The common case, nothing new since the last refresh, in one statement.
        metas, version = idx.get_metas_versioned("uidvalidity", "highestmodseq")
        if int(metas.get("uidvalidity", 0)) != self._uidvalidity:
            changes.uidvalidity_changed = True
            return changes, version
        top = int(metas.get("highestmodseq", 1))
        if top == self._seen_modseq and not self._pending_expunge:
            changes.recent_count = len(self._recent)
            return changes, version
        # What changed since, as the process's shared facts took it in (read from the index once for
        # all the sessions of the folder); the index's rows when that journal does not reach back.
        shared = self.folder.changes_since(self._seen_modseq, (self._uidvalidity, top))
        if shared is not None and shared[0] == self._uidvalidity:
            _uv, top, latest = shared
            self._pending_expunge.update(u for u, st in latest.items() if st is None and u in view)
            rows = [st for st in latest.values() if st is not None]
            self._seen_modseq = top
        else:
            rows = self._changed_rows(changes)
            if changes.uidvalidity_changed:
                return changes, version
        pending = self._pending_expunge
        if pending and allow_expunges:
            # A few expunges out of many messages: find them by bisection, not by a pass over the view.
            uids = self._uids
            positions = sorted(i for i in (bisect.bisect_left(uids, u) for u in pending) if i < len(uids))
            positions = [i for i in positions if uids[i] in pending]
            gone = [uids[i] for i in positions]
            changes.expunged_uids = gone
            changes.expunged_seqs = [i + 1 for i in reversed(positions)]
            if len(positions) * 8 < len(uids):
                uids = list(uids)
                for i in reversed(positions):
                    del uids[i]
                self._uids = uids
            else:
                self._uids = [u for u in uids if u not in pending]
            for u in gone:
                view.pop(u, None)
                self._recent.discard(u)
            pending.clear()
        last = self._uids[-1] if self._uids else 0
        new = sorted(u for u in (st.uid for st in rows) if u not in view and u > last and u not in pending)
        if new:
            if self.readonly:
                first = idx.get_int("first_recent_uid", 1)
                self._recent.update(u for u in new if u >= first)
            else:
                idx.begin()
                try:
                    first = idx.get_int("first_recent_uid", 1)
                    mine = [u for u in new if u >= first]
                    self._recent.update(mine)
                    if mine:
                        idx.set_meta("first_recent_uid", max(mine) + 1)
                    idx.commit()
                except BaseException:
                    idx.rollback()
                    raise
            self._uids.extend(new)
            changes.new_uids = new
        fresh = set(new)
        recent = self._recent
        flag_changes = changes.flag_changes
        # Each session of the folder hears of another's STORE: the flag states are made once per
        # process and change, not once per message and session (Recent ones aside).
        for st in sorted(rows, key=_uid_of):
            uid, modseq = st.uid, st.modseq
            if uid in fresh:
                view[uid] = modseq
            elif uid in view and uid not in pending and view[uid] != modseq:
                view[uid] = modseq
                flag_changes.append(
                    st if uid not in recent else FlagState(uid, st.flags, st.keywords, modseq, True))
        changes.recent_count = len(self._recent)
        return changes, version

    def _changed_rows(self, changes: Changes) -> list[FlagState]:
        """The index's rows whose modseq moved past the one this view last saw, and the expunges
        recorded since (all rows when that history is gone), as flag states; expunged UIDs of the view
        join ``_pending_expunge``."""
        idx = self.folder.index
        db = idx.db
        view = self._modseqs
        with idx.snapshot():
            metas = idx.get_metas("uidvalidity", "highestmodseq", "expunge_floor")
            if int(metas.get("uidvalidity", 0)) != self._uidvalidity:
                changes.uidvalidity_changed = True
                return []
            top = int(metas.get("highestmodseq", 1))
            seen = self._seen_modseq
            if top < seen or seen < int(metas.get("expunge_floor", 0)):
                rows = db.execute("SELECT uid, modseq, flags FROM msg").fetchall()
                present = {r[0] for r in rows}
                self._pending_expunge.update(u for u in self._uids if u not in present)
            elif top != seen:
                rows = db.execute("SELECT uid, modseq, flags FROM msg WHERE modseq>?", (seen,)).fetchall()
                self._pending_expunge.update(
                    u for (u,) in db.execute("SELECT uid FROM expunged WHERE modseq>?", (seen,)) if u in view
                )
            else:
                rows = []
            self._seen_modseq = top
        out = []
        for uid, modseq, flags in rows:
            fs, keywords = _flag_sets(flags)
            out.append(FlagState(uid, fs, keywords, modseq))
        return out

    # --- reading ------------------------------------------------------------------------------

    def fetch_info(
        self,
        uids: Iterable[int],
        *,
        envelope: bool = True,
        bodystructure: bool = True,
        raw: bool = False,
        dates: bool = True,
    ) -> list[MessageInfo]:
        wanted = self._in_view(uids)
        if not wanted:
            return []
        if self._memory_only:
            return self._memory_infos(wanted, envelope, bodystructure, raw, dates)
        if raw and (envelope or bodystructure) and len(wanted) >= _CACHED_ROWS:
            cached = self._cached_infos(wanted, envelope, bodystructure, dates)
            if cached is not None:
                return cached
        elif len(wanted) <= _MANY_ROWS:
            # A FETCH of a few messages as this view knows them (the shared facts at the modseq it last
            # took in, as Dovecot answers from its view): no statement. The index's rows otherwise.
            try:
                return self._memory_infos(wanted, envelope, bodystructure, raw, dates)
            except NotInMemory:
                pass
        cols = "uid, flags, modseq, vsize, idate"
        if envelope:
            cols += ", envelope_imap" if raw else ", envelope"
        if bodystructure:
            cols += ", bodystructure_imap, body_imap" if raw else ", bodystructure, body"
        db = self.folder.index.db
        if len(wanted) > _MANY_ROWS and not (envelope or bodystructure):
            rows = self._fact_rows(wanted)
        elif len(wanted) > _MANY_ROWS:
            rows = [r for r in db.execute(f"SELECT {cols} FROM msg ORDER BY uid") if r[0] in wanted]
        else:
            marks = ",".join("?" * len(wanted))
            rows = list(db.execute(f"SELECT {cols} FROM msg WHERE uid IN ({marks}) ORDER BY uid", sorted(wanted)))
        if envelope or bodystructure or dates:
            rows = self._completed(rows, cols, envelope or bodystructure, dates)
        if len(rows) < len(wanted) and (raw or not (envelope or bodystructure)):
            # Expunged by another session since this one last heard: served from the expunge history.
            rows = sorted(rows + self._expunged_rows(wanted - {r[0] for r in rows}, cols))
        out = []
        recent = self._recent
        bs_i = 6 if envelope else 5
        for r in rows:
            flags, keywords = _flag_sets(r[1]) if type(r[1]) is str else (r[1], keywords_of(r[1]))
            # A date nobody asked for and the index does not know yet stays unknown (the epoch).
            idate = _date_of(r[4])
            if raw:
                out.append(
                    MessageInfo(
                        r[0], flags, keywords,
                        idate, r[3], r[2], r[0] in recent,
                        None, None, None,
                        r[5] if envelope else None,
                        r[bs_i] if bodystructure else None,
                        r[bs_i + 1] if bodystructure else None,
                    )
                )
                continue
            out.append(
                MessageInfo(
                    uid=r[0],
                    flags=flags,
                    keywords=keywords,
                    internal_date=idate,
                    size=r[3],
                    modseq=r[2],
                    recent=r[0] in recent,
                    envelope=loads(r[5]) if envelope else None,
                    bodystructure=loads(r[bs_i]) if bodystructure else None,
                    body=loads(r[bs_i + 1]) if bodystructure else None,
                )
            )
        return out

    def _cached_infos(self, wanted: set[int], envelope: bool, bodystructure: bool,
                      dates: bool) -> list[MessageInfo] | None:
        """:meth:`fetch_info` with ``raw=True`` from memory where it can: flags, sizes and dates from the
        folder's shared facts, the IMAP bytes of ENVELOPE/BODYSTRUCTURE/BODY from the process's cache
        (:data:`~dovetail.maildir.messagecache.IMAP_DATA`; what it lacks is read from the index, in one
        statement, and kept). None when a message is not as common as that (expunged meanwhile, its file
        gone before a parse or a stat could learn what the index lacks): the caller reads the index."""
        rows = self._fact_rows(wanted)
        if len(rows) < len(wanted):
            return None
        keys = [self._key(r[0]) for r in rows]
        blobs = IMAP_DATA.get_many(keys)
        lacking = [r[0] for r, b in zip(rows, blobs, strict=True) if b is None]
        if lacking:
            found = self._imap_data(lacking)
            if found is None:
                return None
            for i, b in enumerate(blobs):
                if b is None:
                    blobs[i] = b = found[rows[i][0]]
                    IMAP_DATA.put(keys[i], b)
        if dates:
            undated = [r[0] for r in rows if r[4] == DATE_UNKNOWN]
            if undated:
                known = lazyfacts.fill_dates(self.folder, undated)
                if len(known) < len(undated):
                    return None
                rows = [(*r[:4], known[r[0]]) if r[0] in known else r for r in rows]
        return self._raw_infos(rows, blobs, envelope, bodystructure)

    def _memory_infos(self, wanted: set[int], envelope: bool, bodystructure: bool, raw: bool,
                      dates: bool) -> list[MessageInfo]:
        """:meth:`fetch_info` inside :meth:`memory_reads`: facts and IMAP bytes from memory, or
        :class:`NotInMemory`."""
        if (envelope or bodystructure) and not raw:
            raise NotInMemory("structures as data are read from the index")
        rows = self._memory_fact_rows(wanted)
        if dates and any(r[4] == DATE_UNKNOWN for r in rows):
            raise NotInMemory("a date is not known yet")
        if envelope or bodystructure:
            blobs = IMAP_DATA.get_many([self._key(r[0]) for r in rows])
            if None in blobs:
                raise NotInMemory("a message's IMAP data is not cached")
        else:
            blobs = [(None, None, None)] * len(rows)
        return self._raw_infos(rows, blobs, envelope, bodystructure)

    def _raw_infos(self, rows: list[tuple], blobs: list, envelope: bool, bodystructure: bool) -> list[MessageInfo]:
        recent = self._recent
        out = []
        for r, (env, bs, body) in zip(rows, blobs, strict=True):
            uid, flags = r[0], r[1]
            out.append(
                MessageInfo(
                    uid, flags, keywords_of(flags),
                    _date_of(r[4]), r[3], r[2], uid in recent,
                    None, None, None,
                    env if envelope else None,
                    bs if bodystructure else None,
                    body if bodystructure else None,
                )
            )
        return out

    def _imap_data(self, uids: list[int]) -> dict[int, tuple[bytes, bytes, bytes]] | None:
        """uid -> (ENVELOPE, BODYSTRUCTURE, BODY) as IMAP bytes from the index, parsing the messages it
        has not parsed yet; None when one of ``uids`` cannot be found or parsed any more."""
        cols = "envelope_imap, bodystructure_imap, body_imap"
        db = self.folder.index.db
        wanted = set(uids)
        if len(uids) > _MANY_ROWS:
            rows = [r for r in db.execute(f"SELECT uid, {cols} FROM msg") if r[0] in wanted]
        else:
            marks = ",".join("?" * len(uids))
            rows = db.execute(f"SELECT uid, {cols} FROM msg WHERE uid IN ({marks})", uids).fetchall()
        if len(rows) < len(wanted):
            return None
        out = {r[0]: (r[1], r[2], r[3]) for r in rows if r[1] is not None and r[2] is not None and r[3] is not None}
        unparsed = [r[0] for r in rows if r[0] not in out]
        if unparsed:
            parsed = lazyfacts.fill_parsed(self.folder, unparsed)
            for uid in unparsed:
                facts = parsed.get(uid)
                if facts is None:
                    return None
                out[uid] = (facts["envelope_imap"], facts["bodystructure_imap"], facts["body_imap"])
        return out

    def _fact_rows(self, wanted: set[int]) -> list[tuple]:
        """Rows ``uid, flags (a set), modseq, vsize, idate`` of ``wanted`` from the folder's shared
        in-memory facts, which are as current as the index: a ``UID FETCH 1:* (FLAGS)`` reads no
        SQLite rows. Messages the facts lack (expunged since) are left out. Bringing the facts up to
        date costs a few statements, more than one ``IN (...)`` query of a few rows: for many only."""
        view = self._uids if len(wanted) * 4 > len(self._uids) else sorted(wanted)

        def pick(facts: dict) -> list[tuple]:
            get = facts.get
            out = []
            for uid in view:
                if uid in wanted:
                    t = get(uid)
                    if t is not None:
                        out.append((uid, t[1], t[4], t[3], t[2]))
            return out

        return self.folder.with_facts(pick)

    def flag_rows(self, uids: Iterable[int]) -> list[tuple[int, frozenset[str], bool, int, int]]:
        wanted = self._in_view(uids)
        if not wanted:
            return []
        recent = self._recent
        if self._memory_only:
            return [(r[0], r[1], r[0] in recent, r[2], r[3]) for r in self._memory_fact_rows(wanted)]
        if len(wanted) > _MANY_ROWS:
            rows = [(r[0], r[1], r[0] in recent, r[2], r[3]) for r in self._fact_rows(wanted)]
        else:
            try:  # as this view knows them, without a statement (see fetch_info)
                return [(r[0], r[1], r[0] in recent, r[2], r[3]) for r in self._memory_fact_rows(wanted)]
            except NotInMemory:
                pass
            marks = ",".join("?" * len(wanted))
            found = self.folder.index.db.execute(
                f"SELECT uid, flags, modseq, vsize FROM msg WHERE uid IN ({marks}) ORDER BY uid", sorted(wanted))
            rows = [(u, _flag_sets(f)[0], u in recent, m, v) for u, f, m, v in found]
        if len(rows) < len(wanted):
            # Expunged by another session since this one last heard: served from the expunge history.
            gone = self._expunged_rows(wanted - {r[0] for r in rows}, "uid, flags, modseq, vsize")
            rows = sorted(rows + [(u, _flag_sets(f)[0], u in recent, m, v) for u, f, m, v in gone])
        return rows

    def _completed(self, rows: list[tuple], cols: str, parsed: bool, dates: bool) -> list[tuple]:
        """``rows`` (of ``cols``, the 5th the date, from the 6th parsed columns) with what the index
        left for later filled in (see :mod:`~dovetail.maildir.lazyfacts`)."""
        names = cols.split(", ")
        if parsed:
            unparsed = [r[0] for r in rows if r[5] is None]
            if unparsed:
                found = lazyfacts.fill_parsed(self.folder, unparsed)
                rows = [_with_parsed(r, names, found[r[0]]) if r[0] in found else r for r in rows]
        if dates:
            undated = [r[0] for r in rows if r[4] == DATE_UNKNOWN]
            if undated:
                known = lazyfacts.fill_dates(self.folder, undated)
                rows = [(*r[:4], known[r[0]], *r[5:]) if r[0] in known else r for r in rows]
        lacking = {r[0] for r in rows if (parsed and r[5] is None) or (dates and r[4] == DATE_UNKNOWN)}
        if lacking:
            # The file went while this session read its row: the expunging session learnt the facts
            # before unlinking it, so they are in the index row or in the expunge history now.
            again = {r[0]: r for r in self._reread(lacking, cols)}
            rows = [again.get(r[0], r) if r[0] in lacking else r for r in rows]
        return rows

    def _reread(self, uids: set[int], cols: str) -> list[tuple]:
        marks = ",".join("?" * len(uids))
        found = self.folder.index.db.execute(f"SELECT {cols} FROM msg WHERE uid IN ({marks})", sorted(uids)).fetchall()
        return found + self._expunged_rows(uids - {r[0] for r in found}, cols)

    def _expunged_rows(self, uids: set[int], cols: str) -> list[tuple]:
        """Rows of the expunge history that still carry their data, in the layout of ``cols``."""
        if not uids:
            return []
        db = self.folder.index.db
        if len(uids) > 200:
            rows = [r for r in db.execute(f"SELECT {cols} FROM expunged WHERE flags IS NOT NULL") if r[0] in uids]
        else:
            marks = ",".join("?" * len(uids))
            rows = db.execute(
                f"SELECT {cols} FROM expunged WHERE flags IS NOT NULL AND uid IN ({marks})", sorted(uids)
            ).fetchall()
        if len(self._gone) > 100_000:
            self._gone.clear()
        self._gone.update(r[0] for r in rows)
        return rows

    def _expunged_facts(self, uids: set[int]) -> list[tuple[int, frozenset[str], float, int, int, bool]]:
        rows = self._expunged_rows(uids, "uid, flags, idate, vsize, modseq")
        return [(u, _flag_sets(f)[0], d, v, m, u in self._recent) for u, f, d, v, m in rows]

    def message_facts(self) -> list[tuple[int, frozenset[str], float, int, int, bool]]:
        """From the folder's shared in-memory facts (see :meth:`Folder.with_facts`), not from SQLite."""
        recent = self._recent
        uids = self._uids
        missing: set[int] = set()
        state = self.folder.state

        def pick(facts: dict) -> list:
            # The same list as last time while neither the facts nor this view moved (searches in a row).
            key = (state.facts_uv, state.facts_modseq, id(uids), len(uids), len(recent))
            if self._facts_memo is not None and self._facts_memo[0] == key:
                return self._facts_memo[1]
            out = []
            get = facts.get
            for uid in uids:
                t = get(uid)
                if t is None:
                    missing.add(uid)
                elif uid in recent:
                    out.append(t[:5] + (True,))
                else:
                    out.append(t)
            self._facts_memo = None if missing else (key, out)
            return out

        out = self.folder.with_facts(pick)
        undated = [t[0] for t in out if t[2] == DATE_UNKNOWN]
        if undated:
            # Searches and sorts may compare dates: learn them (once per message, kept in the index).
            lazyfacts.fill_dates(self.folder, undated)
            self._facts_memo = None
            missing.clear()
            out = self.folder.with_facts(pick)
        if missing:
            out = sorted(out + self._expunged_facts(missing))
        return out

    def header_cache(self) -> dict[tuple[str, int], list[str]]:
        state = self.folder.state
        if state.headers_uv != self._uidvalidity or len(state.headers) > HEADER_CACHE_MAX:
            state.headers = {}
            state.headers_uv = self._uidvalidity
        return state.headers

    def cached_headers(self, uids: Iterable[int]) -> dict[int, bytes]:
        wanted = set(uids)
        db = self.folder.index.db
        if len(wanted) <= 200:
            marks = ",".join("?" * len(wanted))
            rows = db.execute(f"SELECT uid, header, parts IS NULL FROM msg WHERE uid IN ({marks})", sorted(wanted))
        else:
            rows = db.execute("SELECT uid, header, parts IS NULL FROM msg")
        out: dict[int, bytes] = {}
        unread = []
        for uid, header, unparsed in rows:
            if uid not in wanted:
                continue
            if header is not None:
                out[uid] = header
            elif unparsed:  # never looked at: its header is read now (and kept)
                unread.append(uid)
        out.update(lazyfacts.fill_headers(self.folder, unread))
        return out

    def _key(self, uid: int) -> tuple[str, int, int]:
        return (self.folder.path_text, self._uidvalidity, uid)

    def _filename(self, uid: int) -> str:
        row = self.folder.index.db.execute("SELECT filename FROM msg WHERE uid=?", (uid,)).fetchone()
        if row is None:
            raise MessageExpunged(f"message {uid} was expunged")
        return row[0]

    def _read(self, uid: int) -> bytes:
        """The message in CRLF form, from the process's cache when it is there: no index lookup, as
        a UID's content never changes. A message this view knows to be expunged (heard of in a
        refresh, or answered from the expunge history) is refused as when it is not cached; one
        expunged since the view last looked may still be served, as between two refreshes."""
        key = self._key(uid)
        data = MESSAGES.get(key)
        if data is not None and uid not in self._pending_expunge and uid not in self._gone:
            return data
        if self._memory_only:
            raise NotInMemory("the message is not cached")
        for attempt in range(2):
            filename = self._filename(uid)
            try:
                with open(os.path.join(self.folder.path_text, filename), "rb") as f:
                    data = to_crlf(f.read(MAX_MESSAGE_BYTES))
            except FileNotFoundError:
                if attempt == 0:
                    self.folder.sync(force=True)
                continue
            MESSAGES.put(key, data)
            return data
        raise MessageExpunged(f"message {uid} was expunged")

    def _tree(self, uid: int, data: bytes) -> Part:
        """The part tree of message ``uid`` (whose bytes are ``data``): from the process's cache, else
        from the index, else parsed now (and the parse kept in the index)."""
        key = self._key(uid)
        hit = PART_TREES.get(key)
        if hit is not None:
            return hit[0]
        if self._memory_only:
            raise NotInMemory("the message's part tree is not cached")
        row = self.folder.index.db.execute("SELECT parts FROM msg WHERE uid=?", (uid,)).fetchone()
        if row is None:  # expunged by another session since its bytes were cached
            parts = analyse(data)["parts"]
        elif row[0] is None:  # never parsed: its parse is kept for what comes next
            parts = lazyfacts.parse_read(self.folder.index, uid, data)["parts"]
        else:
            parts = row[0]
        tree = _tree_to_part(loads(parts))
        PART_TREES.put(key, (tree, 300 * parts.count("[")))  # two brackets a part
        return tree

    def _header(self, uid: int) -> tuple[bytes, list[tuple[str, bytes]], FieldIndex]:
        """(header block, its fields, those by name) of message ``uid``'s own header, for ``BODY[HEADER]``
        and ``HEADER.FIELDS``: from the process's cache, else from the message's cached bytes, else from
        the header block the index keeps (the file is not read), else from the file."""
        key = self._key(uid)
        servable = uid not in self._pending_expunge and uid not in self._gone
        hit = HEADER_FIELDS.get(key)
        if hit is not None and servable:
            return hit
        block = None
        if not servable or MESSAGES.get(key) is None:
            if self._memory_only:
                raise NotInMemory("the message's header is not cached")
            row = self.folder.index.db.execute("SELECT header FROM msg WHERE uid=?", (uid,)).fetchone()
            if row is None:
                raise MessageExpunged(f"message {uid} was expunged")
            block = row[0]
        if block is None:  # never parsed, or a header too large for the index: found, not parsed
            block = header_block(self._read(uid))
        fields = parse_header(block, 0, len(block))[0].fields
        entry = (block, fields, FieldIndex(fields))
        HEADER_FIELDS.put(key, entry)
        return entry

    def open_message(self, uid: int) -> bytes:
        return self._read(uid)

    def message_text(self, uid: int) -> str:
        return body_text(self._read(uid))

    def folded_text(self, uid: int) -> str:
        """From the process's cache, else from the folder's search text store (``searchtext``), else
        decoded now and kept in both."""
        key = self._key(uid)
        text = TEXTS.get(key)
        if text is not None:
            return text
        store = store_for(self.folder.path)
        text = store.get(self._uidvalidity, uid)
        if text is None or uid in self._pending_expunge or uid in self._gone:
            text = fold_case(body_text(self._read(uid), crlf=True))
            store.put(self._uidvalidity, uid, text, self._uids)
        TEXTS.put(key, text)
        return text

    def text_matches(self, needle: str) -> tuple[set[int], set[int]] | None:
        """From one pass over the folder's search text store; messages this view knows to be
        expunged are left to :meth:`folded_text`, which decides as for any other read."""
        hit = store_for(self.folder.path).scan(self._uidvalidity, needle)
        if hit is not None and (self._pending_expunge or self._gone):
            hit[1].difference_update(self._pending_expunge, self._gone)
        return hit

    def text_has(self, uid: int, needle: str) -> bool | None:
        """From the texts the folder's search text store holds in memory after a scan; messages this
        view knows to be expunged are left to :meth:`folded_text`."""
        if uid in self._pending_expunge or uid in self._gone:
            return None
        return store_for(self.folder.path).contains(self._uidvalidity, uid, needle)

    def get_section(self, uid: int, section: Section | str, partial: tuple[int, int] | None = None) -> bytes:
        sec = parse_section(section) if isinstance(section, str) else section
        if not sec.part and sec.text in ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT"):
            block, fields, index = self._header(uid)
            if sec.text == "HEADER":
                return apply_partial(block, partial)
            if sec.text == "HEADER.FIELDS":
                return apply_partial(index.pick(sec.fields), partial)
            return apply_partial(filter_fields(block, fields, sec.fields, True), partial)
        data = self._read(uid)
        if not sec.part and sec.text is None:
            return apply_partial(data, partial)
        return apply_partial(extract(data, self._tree(uid, data), sec), partial)

    # --- writing ------------------------------------------------------------------------------

    def _check_writable(self) -> None:
        if self.readonly:
            raise ReadOnlyMailbox("mailbox is read-only")

    def append(self, data: bytes, flags: Iterable[str] = (), internal_date: datetime | None = None) -> int:
        self._check_writable()
        return append_to(self.folder, data, flags, internal_date, self._max_append)[0]

    def store_flags(
        self,
        uids: Iterable[int],
        mode: StoreMode,
        flags: Iterable[str],
        unchangedsince: int | None = None,
    ) -> StoreResult:
        """The renames start from the index's names and flags, as a fast sync leaves them (see
        ``Folder.sync``): every Dovetail writer records its renames there. A file another program
        renamed since (Dovecot setting a flag) is not at its name: the files this attempt renamed are
        renamed back, the transaction is rolled back, the folder is synced from the disk and the STORE
        made again from the flags the files have now (a CONDSTORE ``UNCHANGEDSINCE`` still compares
        with the modseqs the client knew)."""
        self._check_writable()
        wanted = clean_flags(flags)
        uids = sorted(self._in_view(uids))
        self.folder.sync(fast=True)
        try:
            return self._store_flags(uids, mode, wanted, unchangedsince, follow=False)
        except FileMoved:
            self.folder.sync()
            return self._store_flags(uids, mode, wanted, unchangedsince, follow=True)

    def _store_flags(self, uids: list[int], mode: StoreMode, wanted: set[str], unchangedsince: int | None,
                     follow: bool) -> StoreResult:
        folder = self.folder
        keywords = folder.load_keywords()
        known = set(keywords.values())
        if any(f[0] != "\\" and f not in known for f in wanted):
            folder.info_for(wanted)  # registers new keywords before any rename
            keywords = folder.load_keywords()
        plan = FlagPlan(mode, wanted, keywords, folder.info_for)
        idx = folder.index
        changed: list[FlagState] = []
        modified: list[int] = []
        caught_up = False
        # Read, decide and rename inside one write transaction so two sessions changing flags at once
        # cannot both start from the same old flags (the index's lock serialises our writers).
        with folder.changing() as before:
            renames: list[tuple[int, str, Outcome]] = []
            for uid, filename, column, modseq in store_rows(idx.db, uids):
                if unchangedsince is not None and modseq > unchangedsince:
                    modified.append(uid)
                    continue
                outcome = plan.outcome(column)
                if outcome is not None:
                    renames.append((uid, filename, outcome))
            if renames:
                modseq = idx.bump_modseq()
                # Nothing but this change happened since this view's last refresh: the refresh after
                # the command has nothing to read back (see below).
                caught_up = modseq - 1 == self._seen_modseq and not self._pending_expunge
                updates: list[tuple[str, str, str, int, int]] = []
                root = folder.path_text
                recent = self._recent
                view = self._modseqs
                done: list[tuple[str, str]] = []
                for uid, filename, (info, column, fs, kws) in renames:
                    try:
                        new_fn = rename_to(root, filename, info, follow)
                    except FileMoved:
                        for old_fn, moved_fn in reversed(done):  # as it was: the STORE is made again
                            with contextlib.suppress(OSError):
                                os.rename(f"{root}/{moved_fn}", f"{root}/{old_fn}")
                        raise
                    if new_fn is None:
                        continue
                    done.append((filename, new_fn))
                    updates.append((new_fn, info, column, modseq, uid))
                    changed.append(FlagState(uid, fs, kws, modseq, uid in recent))
                for st in changed:  # once every rename went through (a FileMoved rolls back)
                    view[st.uid] = modseq
                if updates:
                    idx.db.executemany("UPDATE msg SET filename=?, info=?, flags=?, modseq=? WHERE uid=?", updates)
                touched = (CUR, NEW) if any(r[1].startswith("new/") for r in renames) else (CUR,)
                folder.own_change(before, folder.stamp(), frozenset(touched))
        if caught_up:
            # Committed: the index's changes past what this view saw are this STORE's alone, and the
            # view holds them already (its rows' modseqs; no message came or went).
            self._seen_modseq = modseq
        return StoreResult(changed, modified)

    def copy(self, uids: Iterable[int], dest: str) -> CopyResult:
        target = self._resolve(dest)
        try:
            return copy_messages(self.folder, target, sorted(self._in_view(uids)))
        finally:
            target.close()

    def move(self, uids: Iterable[int], dest: str) -> CopyResult:
        self._check_writable()
        uids = sorted(self._in_view(uids))
        result = self.copy(uids, dest)
        self._remove(list(result.uid_map))
        return result

    def expunge(self, uids: Iterable[int] | None = None) -> list[int]:
        self._check_writable()
        self.folder.sync()
        limit = set(uids) if uids is not None else None
        doomed = self.folder.with_facts(
            lambda facts: sorted(u for u, t in facts.items() if DELETED in t[1] and (limit is None or u in limit))
        )
        return self._remove(doomed)

    def _remove(self, uids: list[int]) -> list[int]:
        """Unlink and record the expunges in one index write transaction (see ``Folder.own_change``)."""
        folder = self.folder
        removed: list[int] = []
        touched = {CUR}
        if not uids:
            return removed
        # The expunge history keeps what sessions not yet told of the expunge may still FETCH: learn
        # it now for messages nobody asked about, while their files are still there.
        kept = uids[-EXPUNGE_DATA_KEPT:]
        lazyfacts.fill_parsed(folder, kept)
        lazyfacts.fill_dates(folder, kept)
        with folder.changing() as before:
            self._unlink(uids, removed, touched)
            if removed:
                folder.index.record_expunges(removed, folder.index.bump_modseq())
                folder.own_change(before, folder.stamp(), frozenset(touched))
        store_for(folder.path).forget(self._uidvalidity, removed)
        return removed

    def _unlink(self, uids: list[int], removed: list[int], touched: set[int]) -> None:
        folder = self.folder
        db = folder.index.db
        for uid in uids:
            row = db.execute("SELECT filename FROM msg WHERE uid=?", (uid,)).fetchone()
            if row is None:
                continue
            filename = row[0]
            base = parse_name(filename.split("/", 1)[1]).basename
            for _ in range(3):
                try:
                    os.unlink(folder.path / filename)
                    removed.append(uid)
                    if filename.startswith("new/"):
                        touched.add(NEW)
                    break
                except FileNotFoundError:
                    found = _find_by_base(folder.path, base)
                    if found is None:
                        break
                    filename = found

    def expunged_since(self, modseq: int) -> list[int] | None:
        idx = self.folder.index
        if modseq < idx.get_int("expunge_floor", 0):
            return None
        return [r[0] for r in idx.db.execute("SELECT uid FROM expunged WHERE modseq>? ORDER BY uid", (modseq,))]

    def changed_since(self, modseq: int) -> list[int]:
        view = set(self._uids)
        rows = self.folder.index.db.execute("SELECT uid FROM msg WHERE modseq>? ORDER BY uid", (modseq,))
        return [r[0] for r in rows if r[0] in view]

    def watch(self) -> MailboxWatcher:
        return watch_folder(self.folder.path)

    def recheck_in(self) -> float | None:
        return self.folder.recheck_in()

    def close(self) -> None:
        flush_store(self.folder.path)
        self.folder.close()


def _find_by_base(path: Path, base: str) -> str | None:
    for sub in ("cur", "new"):
        try:
            for fn in os.listdir(path / sub):
                if fn == base or fn.startswith(base + ":"):
                    return f"{sub}/{fn}"
        except FileNotFoundError:
            continue
    return None


def append_to(
    folder: Folder, data: bytes, flags: Iterable[str], internal_date: datetime | None, max_size: int
) -> tuple[int, int, bool]:
    """Store one message: (uid, uidvalidity, whether it went into the index already)."""
    if len(data) > max_size:
        raise MessageTooLarge("message too large")
    info = folder.info_for(clean_flags(flags))
    ts = internal_date.timestamp() if internal_date is not None else None
    return folder.append_message(data, info, ts)


COPY_REFUSAL = "Not enough disk space: nothing was copied"


def copy_messages(src: Folder, dest: Folder, uids: list[int]) -> CopyResult:
    """Copy messages: each file is linked (or, across file systems, written) into the destination's
    ``tmp/`` first, then all are placed, numbered and indexed at once (``Folder.place_staged``)."""
    src.sync()
    db = src.index.db
    staged: list[tuple[int, Path, str, str]] = []
    written = False
    try:
        for uid in uids:
            row = db.execute("SELECT filename, flags, size, vsize FROM msg WHERE uid=?", (uid,)).fetchone()
            if row is None:
                continue
            filename, flags_j, size, vsize = row
            info = dest.info_for(set(flags_load(flags_j)))
            linked = dest.link_to_tmp(src.path / filename, size, vsize)
            if linked is None:
                try:
                    with open(src.path / filename, "rb") as f:
                        st = os.fstat(f.fileno())
                        data = f.read(MAX_MESSAGE_BYTES)
                except FileNotFoundError:
                    continue
                try:
                    linked = dest.write_tmp(data, st.st_mtime)
                except OSError as exc:
                    if not is_disk_full(exc):
                        raise
                    raise DiskFull(COPY_REFUSAL) from exc
                written = True
            staged.append((uid, linked[0], linked[1], info))
    except BaseException:
        for _uid, tmp, _base, _info in staged:
            tmp.unlink(missing_ok=True)
        raise
    if not staged:
        uidvalidity = dest.index.get_int("uidvalidity") or _uidvalidity_of(dest)
        return CopyResult(uidvalidity, {})
    names = {"vsize": 0}  # the sizes come from the names; the rest is parsed on first need
    mapping, uidvalidity, _indexed = dest.place_staged(
        [(tmp, base, info, names) for _u, tmp, base, info in staged], written, COPY_REFUSAL)
    return CopyResult(uidvalidity, {u: mapping[b] for u, _tmp, b, _info in staged})


def _uidvalidity_of(folder: Folder) -> int:
    from dovetail.maildir import uidlist

    ul = uidlist.read(folder.uidlist_path)
    return ul.uidvalidity if ul else 0

