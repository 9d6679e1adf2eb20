"""What the :class:`~dovetail.maildir.folder.Folder` objects of one directory share within a process.

The sessions of one process that have the same folder open share one :class:`FolderState` (the
stamps of the last sync and the in-memory copy of the index's uid -> file map), so a change is
looked at by one listing per process instead of one per session, and the map is held once. The
changes the shared facts take in are kept in a short journal, so that each session's refresh learns of
another's STORE or EXPUNGE from memory instead of reading the same index rows again. A state
outlives its last user for a while (:data:`IDLE_STATES_KEPT`), so that a client that logs out and in
again finds it warm.

While a folder has users, the index connections of those that closed stay open on its state
(:data:`IDLE_CONNECTIONS_KEPT` at most) for the next :class:`Folder` of the process to take: a STATUS,
an APPEND or a SELECT of a folder another session has open then costs no connect, configuration or
schema check, and no checkpoint at its close. A connection is only ever used by one folder at a time
(its own ``PRAGMA data_version`` and ``total_changes``, by which a view tells another connection's
commit from its own, mean what they did with a connection per folder). When the last user leaves,
they are all closed, the last one checkpointing and removing the WAL and shared-memory files as
before. A connection whose file is no longer the index (deleted, rebuilt) is never handed out.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections import OrderedDict
from pathlib import Path

from dovetail.storage.api import FlagState

# Changes kept in a folder's journal at most; a session that fell further behind reads the index.
JOURNAL_KEPT = 4096
# Idle index connections kept per folder in use (see the module docstring): one per session that opens
# and closes the folder at the same moment as another; more would only hold file descriptors.
IDLE_CONNECTIONS_KEPT = 4


class FolderState:
    """What the :class:`Folder` objects of one directory share within a process; ``lock`` serialises
    their syncs (sessions run them in worker threads)."""

    __slots__ = ("lock", "users", "ident", "stamp", "checked_at", "looked_until", "files", "fnset", "cur", "new",
                 "mirror_modseq", "mirror_uv", "uidnext_meta", "headers", "headers_uv", "facts", "facts_modseq",
                 "facts_uv", "new_empty", "journal", "journal_from", "idle")

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.users = 0
        self.ident = ""  # the index file this state is about (see Index.ident)
        self.stamp: tuple | None = None
        self.checked_at = 0.0  # wall clock when a listing last confirmed ``stamp``
        # Until when (monotonic) a fast sync may skip the disk: a full one looked not long ago (see
        # Folder.sync, ``fast``).
        self.looked_until = 0.0
        self.new_empty: tuple | None = None  # a stamp of new/ at which a listing found it empty
        # The index's uid -> "sub/filename" as of modseq ``mirror_modseq`` (see Folder._refresh_mirror).
        self.files: dict[int, str] | None = None
        self.fnset: set[str] = set()
        self.cur: set[str] = set()  # the names in fnset under cur/ and new/, without the prefix
        self.new: set[str] = set()
        self.mirror_modseq = 0
        self.mirror_uv = 0
        self.uidnext_meta = 0
        # (field, uid) -> header field values, for SEARCH/SORT/THREAD; valid for UIDVALIDITY headers_uv.
        self.headers: dict[tuple[str, int], list[str]] = {}
        self.headers_uv = 0
        # uid -> (uid, flags, internal date, RFC822.SIZE, modseq, False) as of modseq ``facts_modseq``:
        # what SEARCH, SORT and FETCH of flags read for every message, without a SQLite row each time.
        self.facts: dict[int, tuple[int, frozenset[str], float, int, int, bool]] | None = None
        self.facts_modseq = 0
        self.facts_uv = 0
        # (modseq, uid, flags after the change, None for an expunge), oldest first: every change the
        # facts took in with a modseq past ``journal_from``, up to ``facts_modseq`` (see Folder.changes_since).
        self.journal: list[tuple[int, int, FlagState | None]] = []
        self.journal_from = 0
        # Index connections nobody uses, newest last, each with the (device, inode) of the file it is
        # on; only while the state has users (see the module docstring). Under ``_STATES_LOCK``.
        self.idle: list[tuple[sqlite3.Connection, tuple[int, int]]] = []

    def restart_journal(self, modseq: int) -> None:
        """The facts were read whole (or made) as of ``modseq``: the journal starts over from there."""
        self.journal = []
        self.journal_from = modseq

    def forget(self, ident: str) -> None:
        """Start over for another index file (the folder's index was rebuilt)."""
        with self.lock:
            self.ident = ident
            self.stamp = None
            self.checked_at = 0.0
            self.looked_until = 0.0
            self.new_empty = None
            self.files = None
            self.fnset, self.cur, self.new = set(), set(), set()
            self.mirror_modseq = self.mirror_uv = self.uidnext_meta = 0
            self.headers, self.headers_uv = {}, 0
            self.facts, self.facts_modseq, self.facts_uv = None, 0, 0
            self.restart_journal(0)


_STATES: dict[str, FolderState] = {}
_STATES_LOCK = threading.Lock()


# States of folders nobody has open any more, newest last: a client that logs out and in again (or a
# STATUS, an APPEND to another folder) finds its folder's state still warm instead of reading it again.
_IDLE_STATES: OrderedDict[str, FolderState] = OrderedDict()
IDLE_STATES_KEPT = 16


def acquire_state(path: Path) -> FolderState:
    """The state of the folder at ``path`` for one more user (a warm idle one, or a new one)."""
    key = os.path.abspath(path)
    with _STATES_LOCK:
        state = _STATES.get(key)
        if state is None:
            state = _IDLE_STATES.pop(key, None) or FolderState()
            _STATES[key] = state
        state.users += 1
        return state


def release_state(
    path: Path, state: FolderState, conn: tuple[sqlite3.Connection, tuple[int, int]] | None = None
) -> None:
    """One user fewer, giving back its index connection ``conn`` (with its file's identity), if any:
    kept for the next user while the state has others, else closed with the idle ones (outside the
    lock: the last close checkpoints). A state nobody uses joins the idle ones (the oldest beyond the
    limit go)."""
    key = os.path.abspath(path)
    closing: list[tuple[sqlite3.Connection, tuple[int, int]]] = []
    with _STATES_LOCK:
        state.users -= 1
        if state.users <= 0:
            closing, state.idle = state.idle, []
        if conn is not None:
            if state.users > 0 and len(state.idle) < IDLE_CONNECTIONS_KEPT:
                state.idle.append(conn)
            else:
                closing.append(conn)
        if state.users <= 0 and _STATES.get(key) is state:
            del _STATES[key]
            _IDLE_STATES[key] = state
            while len(_IDLE_STATES) > IDLE_STATES_KEPT:
                _IDLE_STATES.popitem(last=False)
    _close_all(closing)


def take_connection(state: FolderState, index_path: Path) -> tuple[sqlite3.Connection, tuple[int, int]] | None:
    """An idle index connection of ``state`` still on the file now at ``index_path`` (the newest); those
    on a file that is gone or was replaced are closed. None when there is none."""
    if not state.idle:
        return None
    try:
        st = os.stat(index_path)
        now: tuple[int, int] | None = (st.st_dev, st.st_ino)
    except OSError:
        now = None
    stale: list[tuple[sqlite3.Connection, tuple[int, int]]] = []
    found = None
    with _STATES_LOCK:
        while state.idle:
            entry = state.idle.pop()
            if entry[1] == now:
                found = entry
                break
            stale.append(entry)
    _close_all(stale)
    return found


def _close_all(conns: list[tuple[sqlite3.Connection, tuple[int, int]]]) -> None:
    for conn, _file in conns:
        try:
            conn.close()
        except sqlite3.Error:
            pass
