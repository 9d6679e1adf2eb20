"""Carrying out what :mod:`dovetail.maildir.syncplan` decides, against the disk, ``dovecot-uidlist``
and the index: listing the directories (moving ``new/`` into ``cur/`` on the way), numbering files
under ``dovecot-uidlist.lock`` as Dovecot does, and writing a :class:`~dovetail.maildir.syncplan.SyncPlan`
into the index inside the caller's write transaction, under one modseq.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sized
from pathlib import Path

from dovetail.maildir import syncplan, uidcache, uidlist
from dovetail.maildir.diskfull import is_disk_full
from dovetail.maildir.filename import sizes_in_name
from dovetail.maildir.index import DATE_UNKNOWN, MODSEQ_INDEX, Index, flags_dump
from dovetail.maildir.lock import DotLock
from dovetail.maildir.messagefacts import name_facts
from dovetail.maildir.syncplan import Listed, SyncPlan


def _names(directory: Path) -> list[str]:
    """The names in ``directory``, which is made when missing (a folder always has cur/ and new/)."""
    try:
        return os.listdir(directory)
    except FileNotFoundError:
        os.makedirs(directory, exist_ok=True)
        return []


def list_folder(path: Path, move_new: bool) -> dict[str, Listed]:
    """basename -> where its file is now; with ``move_new`` the files in ``new/`` are moved to ``cur/``
    first (one that vanishes meanwhile is left out)."""
    return syncplan.listing_of(*list_names(path, move_new))


def list_names(path: Path, move_new: bool) -> tuple[list[str], list[str], dict[str, str] | None]:
    """The names in ``new/`` and ``cur/``, and (with ``move_new``) those of ``new/`` moved to ``cur/``
    first, as :func:`~dovetail.maildir.syncplan.listing_of` takes them; ``cur/`` is listed after the
    moves, so it holds every moved file."""
    new = _names(path / "new")
    moved: dict[str, str] | None = None
    if move_new:
        moved = {}
        for fn, target in syncplan.moves_into_cur(new):
            try:
                os.rename(path / "new" / fn, path / "cur" / target)
            except FileNotFoundError:
                continue
            moved[fn] = target
    return new, _names(path / "cur"), moved


def assign_uids(
    path: Path, basenames: list[str], relist: bool, new_uidvalidity: Callable[[], int]
) -> uidlist.Uidlist:
    """Give UIDs to ``basenames`` not yet in the folder's uidlist (creating it, with a UIDVALIDITY
    from ``new_uidvalidity``, when missing). With ``relist`` the records of files no longer in the
    folder are dropped too. New records alone are appended to the file; anything else rewrites it."""
    ul_path = path / uidlist.UIDLIST
    with DotLock(path / uidlist.LOCK):
        cached, cached_by_base = uidcache.cached(ul_path)
        if cached is None:
            base_ul = uidlist.Uidlist(uidvalidity=new_uidvalidity(), nextuid=1, guid=uuid.uuid4().hex)
        else:
            base_ul = cached  # shared by the sessions of this process: only copies are changed
        numbering = syncplan.number(base_ul.entries, base_ul.nextuid, cached_by_base, basenames)
        ul = uidlist.Uidlist(
            base_ul.uidvalidity, numbering.nextuid, base_ul.guid, list(base_ul.header_extra), numbering.entries
        )
        by_base = numbering.by_base
        changed = cached is None or not ul_path.exists()
        if relist and base_ul.entries:  # a uidlist with no records has none to drop
            gone = syncplan.vanished(ul.entries, list_folder(path, move_new=False), basenames)
            for u in gone:
                del ul.entries[u]
            if gone:
                by_base = ul.by_basename()
                changed = True
        added = numbering.added
        try:
            if changed or (added and not uidlist.append(ul_path, added)):
                uidlist.write(ul_path, ul)
        except OSError as exc:
            # Dropping the records of vanished files can wait for a disk with room; numbering cannot.
            if added or cached is None or not is_disk_full(exc):
                raise
        if changed or added:
            uidcache.remember(ul_path, ul, by_base)
        return ul


def reset_index(index: Index, ul: uidlist.Uidlist) -> None:
    """Empty the index for the uidlist's (new) UIDVALIDITY: every message is numbered anew."""
    index.begin()
    index.reset()
    index.set_meta("uidvalidity", ul.uidvalidity)
    index.set_meta("first_recent_uid", 1)
    index.set_meta("uidnext", ul.nextuid)
    index.commit()


def facts_ahead(path: Path, items: Iterable[tuple[int, Listed]]) -> dict[int, dict | None]:
    """uid -> row facts of each file from its name (None when it vanished), before the index is
    locked (a name without sizes costs a stat or a read)."""
    subs = {sub: str(path / sub) for sub in ("cur", "new")}
    return {uid: name_facts(subs[item.sub], item.filename) for uid, item in items}


def apply_plan(index: Index, path: Path, plan: SyncPlan, parsed: Mapping[int, dict | None]) -> None:
    """Write ``plan`` into the index (the caller holds its write transaction). Every change takes the
    same new modseq, bumped only when something is written; a new file missing from ``parsed`` is
    parsed now, and left for a later sync when it vanished."""
    db = index.db
    modseq: int | None = None

    def next_modseq() -> int:
        nonlocal modseq
        if modseq is None:
            modseq = index.bump_modseq()
        return modseq

    if plan.expunge:
        index.record_expunges(plan.expunge, next_modseq())
    for r in plan.renames:
        if r.flags is not None:
            db.execute(
                "UPDATE msg SET filename=?, info=?, flags=?, modseq=? WHERE uid=?",
                (r.filename, r.info, flags_dump(r.flags), next_modseq(), r.uid),
            )
        else:
            db.execute("UPDATE msg SET filename=?, modseq=? WHERE uid=?", (r.filename, next_modseq(), r.uid))
    rows = []
    named = []  # rows of name facts only (every row of a first sync): their parsed columns stay NULL
    dumped: dict[str, str] = {}  # info -> its flags column: a folder has few distinct info strings
    for ins in plan.inserts:
        facts = parsed.get(ins.uid) or name_facts(str(path / ins.listed.sub), ins.listed.filename)
        if facts is None:
            continue
        if len(facts) == 3:  # size, vsize, idate
            flags = dumped.get(ins.info)
            if flags is None:
                flags = dumped[ins.info] = flags_dump(ins.flags)
            named.append((ins.uid, ins.filename[4:].partition(":")[0], ins.filename, ins.info, flags,
                          next_modseq(), facts["size"], facts["vsize"], facts["idate"]))
        else:
            rows.append(row_of(ins.uid, ins.filename, ins.info, ins.flags, next_modseq(), facts))
    if named:
        # Nine bound values a row instead of seventeen: the cost of a first sync of a large folder.
        index.db.executemany(_INSERT_NAMED, named)
    if rows:
        index.db.executemany(_INSERT, rows)
    if plan.uidnext is not None:
        index.set_meta("uidnext", plan.uidnext)


# The usual end of a name's base: ",S=<size>,W=<vsize>" (what Dovecot and Dovetail write), read
# without splitting the name into fields; any other name goes through ``sizes_in_name``.
_SIZES_AT_END = re.compile(r",S=([0-9]+),W=([0-9]+)\Z")


def first_rows(
    path: Path, listing: Mapping[str, Listed], by_base: Mapping[str, int], keywords: Mapping[int, str]
) -> list[tuple]:
    """The index rows of the numbered files of ``listing`` for an index that knows no message yet
    (the first sync of a folder), in UID order, as ``(uid, basename, filename, info, flags, size,
    vsize, idate)``: the modseq is added when they are inserted. One pass over the names and one tuple
    a file, where a sync of changes builds an :class:`~dovetail.maildir.syncplan.Insert` and a facts
    dict for each. A name without sizes costs a stat or a read (:func:`name_facts`); a file that
    vanished meanwhile is left out."""
    rows = []
    flag_cols: dict[str, str] = {}  # info -> its flags column: a folder has few distinct ones
    sizes_at_end = _SIZES_AT_END.search
    unknown = DATE_UNKNOWN
    for base, item in listing.items():
        uid = by_base.get(base)
        if uid is None:
            continue
        fn = item.filename
        if item.sub == "cur":
            rest = fn.partition(":")[2]
            info = rest[2:] if rest[:2] == "2," else ""
        else:
            info = ""
        flags = flag_cols.get(info)
        if flags is None:
            flags = flag_cols[info] = flags_dump(syncplan.flags_of(info, keywords))
        sizes = sizes_at_end(base)
        if sizes is not None:
            rows.append((uid, base, f"{item.sub}/{fn}", info, flags, int(sizes[1]), int(sizes[2]), unknown))
            continue
        facts = name_facts(str(path / item.sub), fn)
        if facts is not None:
            rows.append((uid, base, f"{item.sub}/{fn}", info, flags, facts["size"], facts["vsize"], facts["idate"]))
    rows.sort()
    return rows


# From this many rows on, a first fill makes the modseq index after the rows (see insert_first).
BULK_ROWS = 1000


def insert_first(index: Index, rows: Iterable[tuple], nextuid: int) -> int:
    """Insert :func:`first_rows` into an index with no message rows (the caller holds its write
    transaction and has checked that): all under one new modseq, which is returned."""
    modseq = index.bump_modseq()
    db = index.db
    # The modseq index is made again after the rows rather than grown by one entry a row (a fifth of
    # the insert's time, for a large folder), as a bulk load does; all in the caller's transaction.
    bulk = len(rows) >= BULK_ROWS if isinstance(rows, Sized) else True
    if bulk:
        db.execute("DROP INDEX IF EXISTS msg_modseq")
    # Plain INSERT (the table is empty) with the modseq written into the statement: seven values bound
    # a row, the cost of a first sync of a large folder.
    db.executemany(
        "INSERT INTO msg (uid, basename, filename, info, flags, modseq, size, vsize, idate) "
        f"VALUES (?,?,?,?,?,{int(modseq)},?,?,?)",
        rows,
    )
    if bulk:
        db.execute(MODSEQ_INDEX)
    if nextuid > index.get_int("uidnext", 0):
        index.set_meta("uidnext", nextuid)
    return modseq


_INSERT = "INSERT OR REPLACE INTO msg VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
_INSERT_NAMED = ("INSERT OR REPLACE INTO msg (uid, basename, filename, info, flags, modseq, size, vsize, idate) "
                 "VALUES (?,?,?,?,?,?,?,?,?)")


def insert_row(index: Index, uid: int, stored_fn: str, info: str, flags: list[str], modseq: int, facts: dict) -> None:
    """The index row of message ``uid`` in file ``stored_fn`` ("cur/..." or "new/...")."""
    vsize = sizes_in_name(stored_fn)[1]  # the name's, as a sync would have it
    if vsize is not None:
        facts = {**facts, "vsize": vsize}
    index.db.execute(_INSERT, row_of(uid, stored_fn, info, flags, modseq, facts))


def row_of(uid: int, stored_fn: str, info: str, flags: list[str], modseq: int, facts: dict) -> tuple:
    """The values of a ``msg`` row; ``facts`` from :func:`~dovetail.maildir.messagefacts.name_facts`
    (the parsed columns stay NULL, the vsize is the name's) or from a parse."""
    get = facts.get
    return (
        uid,
        stored_fn[4:].partition(":")[0],
        stored_fn,
        info,
        flags_dump(flags),
        modseq,
        facts["size"],
        facts["vsize"],
        facts["idate"],
        get("envelope"),
        get("body"),
        get("bodystructure"),
        get("parts"),
        get("envelope_imap"),
        get("body_imap"),
        get("bodystructure_imap"),
        get("header"),
    )
