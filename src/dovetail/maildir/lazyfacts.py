"""The index columns a sync leaves for later (see :mod:`~dovetail.maildir.index`), filled in the first
time something asks: the internal date from a ``stat`` of the file, the parsed columns from a parse.

What is found is written back to the index (without a modseq: these facts never change under a UID)
in one short write transaction, so every session of every process finds it there next time. When the
index cannot be written (locked for too long, disk full) the facts are still returned, just not kept.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING

from dovetail.maildir.index import DATE_UNKNOWN, PARSED_COLUMNS, Index
from dovetail.maildir.messagefacts import MAX_CACHED_HEADER, analyse, analyse_file, read_header

if TYPE_CHECKING:
    from dovetail.maildir.folder import Folder

_MANY = 200  # above this many UIDs, one pass over the table beats an IN (...) list

_SAVE_PARSED = (
    f"UPDATE msg SET ({', '.join(PARSED_COLUMNS)}) = ({', '.join('?' for _ in PARSED_COLUMNS)}), "
    "idate = CASE WHEN idate = ? AND ? IS NOT NULL THEN ? ELSE idate END WHERE uid = ? AND parts IS NULL"
)


def _rows(index: Index, cols: str, uids: Collection[int]) -> list[tuple]:
    """``SELECT uid, cols`` of the index rows of ``uids``."""
    db = index.db
    if len(uids) > _MANY:
        wanted = set(uids)
        return [r for r in db.execute(f"SELECT uid, {cols} FROM msg") if r[0] in wanted]
    marks = ",".join("?" * len(uids))
    return db.execute(f"SELECT uid, {cols} FROM msg WHERE uid IN ({marks})", sorted(uids)).fetchall()


def _write(index: Index, sql: str, params: Iterable[tuple]) -> None:
    """Run ``sql`` for each of ``params`` in a write transaction of its own (or the caller's); skipped
    when the index cannot be written now."""
    db = index.db
    if db.in_transaction:
        db.executemany(sql, params)
        return
    try:
        index.begin()
    except sqlite3.OperationalError:
        return
    try:
        db.executemany(sql, params)
        index.commit()
    except sqlite3.OperationalError:
        index.rollback()


def _files_of(folder: Folder, uids: Collection[int], retry: bool) -> list[tuple[int, str]]:
    """(uid, file name) of ``uids`` as the index has them; with ``retry`` after a sync first (their files
    were renamed or removed since the index was last brought up to date)."""
    if retry:
        folder.sync(force=True)
    return [(uid, fn) for uid, fn in _rows(folder.index, "filename", uids)]


def fill_dates(folder: Folder, uids: Collection[int]) -> dict[int, float]:
    """uid -> internal date of each of ``uids`` (the file's mtime), from the index where it is known,
    else from a ``stat`` of the file, written back. The folder's shared facts take them too. A message
    whose file is gone is left out."""
    if not uids:
        return {}
    dates: dict[int, float] = {}
    todo: list[int] = []
    for uid, idate in _rows(folder.index, "idate", uids):
        if idate == DATE_UNKNOWN:
            todo.append(uid)
        else:
            dates[uid] = idate
    found: list[tuple[float, int, float]] = []
    for retry in (False, True):
        if not todo:
            break
        missed = []
        for uid, fn in _files_of(folder, todo, retry):
            try:
                mtime = os.stat(folder.path / fn).st_mtime
            except FileNotFoundError:
                missed.append(uid)
                continue
            dates[uid] = mtime
            found.append((mtime, uid, DATE_UNKNOWN))
        todo = missed
    if found:
        _write(folder.index, "UPDATE msg SET idate=? WHERE uid=? AND idate=?", found)
    _share_dates(folder, dates)
    return dates


def _share_dates(folder: Folder, dates: dict[int, float]) -> None:
    state = folder.state
    with state.lock:
        facts = state.facts
        if facts is None:
            return
        for uid, idate in dates.items():
            t = facts.get(uid)
            if t is not None and t[2] != idate:
                facts[uid] = (t[0], t[1], idate, t[3], t[4], t[5])


def fill_parsed(folder: Folder, uids: Collection[int]) -> dict[int, dict]:
    """uid -> what a parse gives (the ``PARSED_COLUMNS`` and ``idate``) for each of ``uids`` whose row
    has not been parsed yet, written back; messages already parsed, or whose file is gone, are left
    out."""
    todo = [uid for uid, unparsed in _rows(folder.index, "parts IS NULL", uids) if unparsed]
    out: dict[int, dict] = {}
    for retry in (False, True):
        if not todo:
            break
        missed = []
        for uid, fn in _files_of(folder, todo, retry):
            facts = analyse_file(folder.path / fn)
            if facts is None:
                missed.append(uid)
            else:
                out[uid] = facts
        todo = missed
    save_parsed(folder.index, out)
    return out


def fill_headers(folder: Folder, uids: Collection[int]) -> dict[int, bytes]:
    """uid -> header block of each of ``uids`` whose row has neither a header nor a parse yet, read
    from the file (only the header is kept: a header SEARCH over a fresh folder parses nothing else)
    and written back. Blocks too large for the index are left out (read with the message when needed)."""
    todo = [uid for uid, unread in _rows(folder.index, "header IS NULL AND parts IS NULL", uids) if unread]
    out: dict[int, bytes] = {}
    for retry in (False, True):
        if not todo:
            break
        missed = []
        for uid, fn in _files_of(folder, todo, retry):
            block = read_header(folder.path / fn)
            if block is None:
                missed.append(uid)
            else:
                out[uid] = block
        todo = missed
    kept = {uid: block for uid, block in out.items() if len(block) <= MAX_CACHED_HEADER}
    if kept:
        _write(folder.index, "UPDATE msg SET header=? WHERE uid=? AND header IS NULL",
               [(block, uid) for uid, block in kept.items()])
    return kept


def parse_read(index: Index, uid: int, crlf: bytes) -> dict:
    """What a parse of message ``uid`` gives, from its bytes already read (CRLF), written back."""
    facts = analyse(crlf)
    save_parsed(index, {uid: facts})
    return facts


def save_parsed(index: Index, parsed: dict[int, dict]) -> None:
    if parsed:
        _write(index, _SAVE_PARSED, [
            (*(f[c] for c in PARSED_COLUMNS), DATE_UNKNOWN, f.get("idate"), f.get("idate"), uid)
            for uid, f in parsed.items()
        ])
