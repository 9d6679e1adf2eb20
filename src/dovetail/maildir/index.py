"""Per-mailbox cache ``dovetail-index.sqlite``: UID <-> file, flags, modseq, sizes, internal date,
ENVELOPE, BODYSTRUCTURE, the MIME part offsets and the raw header block (so that SEARCH on headers
opens no file).

A message found by a sync gets its row from its file name alone, as Dovecot's index does: flags from
``:2,``, sizes from ``,S=``/``,W=``. The internal date (the file's mtime, ``DATE_UNKNOWN`` until then)
and what parsing gives (the ``parsed`` columns, NULL until then; ``parts`` is set by every parse) are
filled in the first time something asks for them (see :mod:`~dovetail.maildir.lazyfacts`), so the
first SELECT of a large Maildir reads no message file. They never change under a UID, so filling them
moves no modseq.

An expunged message keeps its flags, sizes, date and IMAP ENVELOPE/BODY/BODYSTRUCTURE in the expunge
history (for the newest ``EXPUNGE_DATA_KEPT`` expunges): a session that has not yet been told of the
expunge still answers FETCH of those items, as Dovecot does from its index; only the body is gone.

It is a cache over the Maildir and ``dovecot-uidlist`` (Dovecot ignores the file): delete it and it is
rebuilt; the UIDs themselves always come from ``dovecot-uidlist``. SQLite (WAL) lets sessions in many
processes share it; every sync runs in one ``BEGIN IMMEDIATE`` transaction, which also serialises our
own writers. Modseqs (CONDSTORE) and the expunge history (QRESYNC) live only here.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dovetail.maildir.diskfull import index_unwritable
from dovetail.maildir.indexdb import IndexDB, memory_copy, warn_once

INDEX_FILE = "dovetail-index.sqlite"
# Page cache per connection in KiB (negative: KiB, SQLite's convention). Every selected session holds a
# connection; the default 2 MB each made idle sessions expensive, and the rows a session reads are few.
CACHE_KIB = 256
# Reads go through a memory map of the file (the page cache, shared by every process) instead of one
# pread system call per page: a FETCH 1:* reads every row, and the system calls cost more than the rest.
MMAP_BYTES = 256 * 1024 * 1024
SCHEMA_VERSION = 6
# Schema 6 has schema 5's tables; it may leave the parsed columns NULL and the date DATE_UNKNOWN
# (a schema 5 index is taken over as it is, while older code rebuilds a schema 6 one).
UPGRADABLE = ("5",)
DATE_UNKNOWN = -1.0
SCHEMA_MISMATCH = "index schema mismatch"
# How long an open waits for another process's lock on the file (its busy handler, then new tries).
OPEN_DEADLINE = 30.0
# SQLite's primary result codes that decide what a failed open does (see Index._open_file).
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_CORRUPT, _SQLITE_NOTADB = 5, 6, 11, 26
PARSED_COLUMNS = ("envelope", "body", "bodystructure", "parts", "envelope_imap", "body_imap",
                  "bodystructure_imap", "header")
EXPUNGE_HISTORY = 10000
EXPUNGE_DATA_KEPT = 1000
_EXPUNGED_DATA = ("flags", "vsize", "idate", "envelope_imap", "body_imap", "bodystructure_imap")
_EXPUNGED_KINDS = ("TEXT", "INTEGER", "REAL", "BLOB", "BLOB", "BLOB")

# Made apart by a first fill of many rows (see syncapply.insert_first).
MODSEQ_INDEX = "CREATE INDEX IF NOT EXISTS msg_modseq ON msg(modseq)"
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS msg (
    uid INTEGER PRIMARY KEY,
    basename TEXT NOT NULL,
    filename TEXT NOT NULL,
    info TEXT NOT NULL,
    flags TEXT NOT NULL,
    modseq INTEGER NOT NULL,
    size INTEGER NOT NULL,
    vsize INTEGER NOT NULL,
    idate REAL NOT NULL,
    envelope TEXT,
    body TEXT,
    bodystructure TEXT,
    parts TEXT,
    envelope_imap BLOB,
    body_imap BLOB,
    bodystructure_imap BLOB,
    header BLOB
);
CREATE TABLE IF NOT EXISTS expunged (
    uid INTEGER PRIMARY KEY,
    modseq INTEGER NOT NULL,
    flags TEXT,
    vsize INTEGER,
    idate REAL,
    envelope_imap BLOB,
    body_imap BLOB,
    bodystructure_imap BLOB
);
CREATE INDEX IF NOT EXISTS expunged_modseq ON expunged(modseq);
{MODSEQ_INDEX};
"""


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def flags_dump(flags: Iterable[str]) -> str:
    """Flags column: space-separated (flags and keywords never contain spaces), cheap to split."""
    return " ".join(sorted(flags))


def flags_load(text: str) -> list[str]:
    return text.split()


def _configure(db: sqlite3.Connection) -> None:
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
    db.execute(f"PRAGMA mmap_size={MMAP_BYTES}")
    db.execute("PRAGMA cache_spill=OFF")


def _schema_current(db: sqlite3.Connection) -> bool:
    """Whether the file says it is of this schema: its tables were then all made before that row was
    written (see :func:`_check_schema`), and opening it needs no ``CREATE ... IF NOT EXISTS`` script."""
    try:
        row = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return False
        raise
    return row is not None and row[0] == str(SCHEMA_VERSION)


def _check_schema(db: sqlite3.Connection) -> None:
    """Create the tables when missing and take an older schema over; DatabaseError when the file is
    of a schema this code does not know."""
    if _schema_current(db):
        return
    db.executescript(_SCHEMA)
    row = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
    if row is not None and row[0] == "4":
        with db:
            db.execute("BEGIN IMMEDIATE")
            have = {r[1] for r in db.execute("PRAGMA table_info(expunged)")}
            for col, kind in zip(_EXPUNGED_DATA, _EXPUNGED_KINDS, strict=True):
                if col not in have:
                    db.execute(f"ALTER TABLE expunged ADD COLUMN {col} {kind}")
            db.execute("UPDATE meta SET value=? WHERE key='schema'", (str(SCHEMA_VERSION),))
            db.execute("COMMIT")
        row = (str(SCHEMA_VERSION),)
    if row is None or row[0] in UPGRADABLE:
        db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
    elif row[0] != str(SCHEMA_VERSION):
        raise sqlite3.DatabaseError(SCHEMA_MISMATCH)


def _rebuild_cures(exc: sqlite3.DatabaseError) -> bool:
    """Whether ``exc`` says the file itself is bad (corrupt, not a database, an unknown schema), so that
    making it again is the cure; not a lock, an I/O error or a full disk, which pass."""
    if str(exc) == SCHEMA_MISMATCH:
        return True
    return (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in (_SQLITE_CORRUPT, _SQLITE_NOTADB)


def _busy(exc: sqlite3.DatabaseError) -> bool:
    """Whether ``exc`` is another connection's lock (SQLITE_BUSY/LOCKED), so that trying again helps."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    return code in (_SQLITE_BUSY, _SQLITE_LOCKED) or (not code and "locked" in str(exc))


FileId = tuple[int, int]  # (device, inode) of the index file a connection is on


def _file_id(path: Path) -> FileId | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


class Index:
    """Thin wrapper over one SQLite connection: a new one, or ``pooled``, a connection to the same file
    that another :class:`Index` of the process gave back (see :meth:`detach`), with that file's id."""

    def __init__(self, folder: Path, pooled: tuple[sqlite3.Connection, FileId] | None = None) -> None:
        self.path = folder / INDEX_FILE
        if pooled is not None:
            self.db = IndexDB(pooled[0], self.path)
            self.file_id: FileId | None = pooled[1]
        else:
            self.file_id = _file_id(self.path)  # before the connection: a file replaced meanwhile is not taken for it
            self.db = self._open()
            if self.file_id is None and not self.db.in_memory:
                self.file_id = _file_id(self.path)
        self.ident = self._ident()

    @property
    def in_memory(self) -> bool:
        """Whether the index went on in memory because its file cannot be written (see ``indexdb``)."""
        return self.db.in_memory

    def _ident(self) -> str:
        """A name given to this index file when it was made: what a process remembers about a folder
        is about one index, and a rebuilt index (deleted, or corrupt) is another one."""
        row = self.db.execute("SELECT value FROM meta WHERE key='ident'").fetchone()
        if row is None:
            self.db.execute("INSERT OR IGNORE INTO meta VALUES ('ident', ?)", (uuid.uuid4().hex,))
            row = self.db.execute("SELECT value FROM meta WHERE key='ident'").fetchone()
        return row[0]

    def _open(self) -> IndexDB:
        """The file's connection; its copy in memory when the file cannot be written now (a full disk
        must not cost the index: it is only rebuilt when it is corrupt or of an unknown schema)."""
        try:
            return IndexDB(self._open_file(), self.path)
        except sqlite3.OperationalError as exc:
            if not index_unwritable(exc):
                raise
            warn_once(self.path, exc)
            mem = memory_copy(None, self.path)
            try:
                _check_schema(mem)
            except sqlite3.DatabaseError:
                mem.close()
                mem = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
                mem.executescript(_SCHEMA)
                mem.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            return IndexDB(mem, self.path, in_memory=True)

    def _open_file(self) -> sqlite3.Connection:
        """The file's connection, configured and of this schema. A corrupt file, or one of a schema this
        code does not know, is rebuilt (it is a cache); a file that is only busy (another process
        creating it, converting it to WAL or recovering it) is opened again until ``OPEN_DEADLINE``:
        deleting its ``-shm`` under another process's connection would corrupt a healthy index."""
        deadline = time.monotonic() + OPEN_DEADLINE
        pause = 0.001
        while True:
            db = sqlite3.connect(self.path, timeout=OPEN_DEADLINE, isolation_level=None,
                                 check_same_thread=False)
            try:
                _configure(db)
                _check_schema(db)
                return db
            except sqlite3.DatabaseError as exc:
                db.close()
                if _rebuild_cures(exc):
                    break
                if not _busy(exc) or time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
        for suffix in ("", "-wal", "-shm"):
            Path(str(self.path) + suffix).unlink(missing_ok=True)
        self.file_id = None  # a new file
        db = sqlite3.connect(self.path, timeout=OPEN_DEADLINE, isolation_level=None, check_same_thread=False)
        _configure(db)
        db.executescript(_SCHEMA)
        db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        return db

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return default if row is None else row[0]

    def get_metas(self, *keys: str) -> dict[str, str]:
        """The values of ``keys`` that are set, read in one statement (so from one state of the file)."""
        marks = ",".join("?" * len(keys))
        return dict(self.db.execute(f"SELECT key, value FROM meta WHERE key IN ({marks})", keys).fetchall())

    def get_metas_versioned(self, *keys: str) -> tuple[dict[str, str], int | None]:
        """:meth:`get_metas` and ``PRAGMA data_version`` (it moves when another connection commits) in
        one statement: of the same state of the file, in one read transaction (each costs locks on the
        shared memory) instead of two. The version is None for an index kept in memory (nothing tells
        it of other writers)."""
        if self.db.in_memory:
            return self.get_metas(*keys), None
        marks = ",".join("?" * len(keys))
        metas: dict[str, str] = {}
        version: int | None = None
        for key, value in self.db.execute(
            f"SELECT key, value FROM meta WHERE key IN ({marks})"
            " UNION ALL SELECT NULL, data_version FROM pragma_data_version", keys
        ).fetchall():
            if key is None:
                version = int(value)
            else:
                metas[key] = value
        return metas, None if self.db.in_memory else version

    def get_int(self, key: str, default: int = 0) -> int:
        value = self.get_meta(key)
        return default if value is None else int(value)

    def set_meta(self, key: str, value: object) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, str(value)))

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """A read transaction: the queries inside see one consistent state of the index (WAL)."""
        self.db.execute("BEGIN")
        try:
            yield
        finally:
            self.db.execute("COMMIT")

    def begin(self) -> None:
        self.db.begin_write()

    def commit(self) -> None:
        self.db.end_write("COMMIT")

    def rollback(self) -> None:
        self.db.abandon_write()

    def bump_modseq(self) -> int:
        modseq = self.get_int("highestmodseq", 1) + 1
        self.set_meta("highestmodseq", modseq)
        return modseq

    def reset(self) -> None:
        self.db.execute("DELETE FROM msg")
        self.db.execute("DELETE FROM expunged")

    def record_expunges(self, uids: list[int], modseq: int) -> None:
        cols = ", ".join(_EXPUNGED_DATA)
        self.db.executemany("INSERT OR REPLACE INTO expunged (uid, modseq) VALUES (?, ?)", [(u, modseq) for u in uids])
        self.db.executemany(
            f"UPDATE expunged SET ({cols}) = (SELECT {cols} FROM msg WHERE msg.uid=expunged.uid) "
            "WHERE uid=? AND EXISTS (SELECT 1 FROM msg WHERE msg.uid=?)",
            [(u, u) for u in uids],
        )
        self.db.executemany("DELETE FROM msg WHERE uid=?", [(u,) for u in uids])
        count = self.db.execute("SELECT count(*) FROM expunged").fetchone()[0]
        if count > EXPUNGE_DATA_KEPT:
            cut = self.db.execute(
                "SELECT modseq FROM expunged ORDER BY modseq DESC LIMIT 1 OFFSET ?", (EXPUNGE_DATA_KEPT,)
            ).fetchone()[0]
            self.db.execute(
                f"UPDATE expunged SET ({cols}) = ({', '.join('NULL' for _ in _EXPUNGED_DATA)}) "
                "WHERE modseq<=? AND flags IS NOT NULL",
                (cut,),
            )
        if count > EXPUNGE_HISTORY:
            cut = self.db.execute(
                "SELECT modseq FROM expunged ORDER BY modseq DESC LIMIT 1 OFFSET ?", (EXPUNGE_HISTORY,)
            ).fetchone()[0]
            self.db.execute("DELETE FROM expunged WHERE modseq<=?", (cut,))
            self.set_meta("expunge_floor", cut)

    def close(self) -> None:
        self.db.close()

    def detach(self) -> tuple[sqlite3.Connection, FileId] | None:
        """Give up the file's connection (with the file's id) for another :class:`Index` on the same
        file to take, instead of closing it; None, having closed it, when it is not fit for that: the
        index went on in memory, a transaction is left open, or the file is unknown. This index is
        closed either way."""
        db = self.db
        conn = db.conn
        file_id = self.file_id
        db.conn = _CLOSED
        if db.in_memory or file_id is None or conn.in_transaction:
            conn.close()
            return None
        return conn, file_id


# What a closed or detached index is left with: any statement raises ProgrammingError, as one on a
# closed connection did before connections were passed on (never another folder's connection).
_CLOSED = sqlite3.connect(":memory:", check_same_thread=False)
_CLOSED.close()
