"""The per-message work of a flag change (STORE) on a Maildir: the new flags of each message, its file's
new name and its index row.

A STORE over many messages meets few distinct old flag combinations, so :class:`FlagPlan` works out
each combination's outcome (new flags, file name info, flags column, the sets a FETCH reports) once,
from one read of ``dovecot-keywords``. :func:`rename_to` joins plain strings: building ``pathlib``
objects for both names cost more than the ``rename`` system call itself.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from dovetail.maildir.filename import INFO_SEP, info_string
from dovetail.maildir.index import flags_dump
from dovetail.maildir.indexdb import IndexDB
from dovetail.maildir.keywords import letter
from dovetail.storage.api import SYSTEM_FLAGS, StoreMode

# (info, flags column, flags, keywords) of a message's new state.
Outcome = tuple[str, str, frozenset[str], frozenset[str]]

_CHUNK = 500  # UIDs per IN (...) list when reading the rows a STORE changes


def store_rows(db: IndexDB, uids: list[int]) -> list[tuple[int, str, str, int]]:
    """``(uid, filename, flags, modseq)`` of the index rows of ``uids`` (ascending), a few statements
    for the lot instead of one per message."""
    out: list[tuple[int, str, str, int]] = []
    for start in range(0, len(uids), _CHUNK):
        chunk = uids[start : start + _CHUNK]
        marks = ",".join("?" * len(chunk))
        out += db.execute(
            f"SELECT uid, filename, flags, modseq FROM msg WHERE uid IN ({marks}) ORDER BY uid", chunk).fetchall()
    return out


_STATES: dict[tuple[tuple[tuple[int, str], ...], frozenset[str]], Outcome] = {}
_STATES_MAX = 4096


class FlagPlan:
    """What ``mode`` with ``wanted`` makes of each old flags column. ``keywords`` is the folder's
    keyword map (index -> name) once the wanted keywords are registered; ``info_for`` is the folder's
    own, asked only for a keyword that map lacks (it may add it, as before any rename). A new flag
    set's outcome is kept per process and keyword map: the messages of a folder share few of them."""

    def __init__(
        self, mode: StoreMode, wanted: set[str], keywords: dict[int, str], info_for: Callable[[set[str]], str]
    ) -> None:
        self._mode = mode
        self._wanted = frozenset(wanted)
        self._keywords = tuple(sorted(keywords.items()))
        self._letters = {name: letter(i) for i, name in keywords.items()}
        self._info_for = info_for
        self._outcomes: dict[str, Outcome | None] = {}

    def outcome(self, column: str) -> Outcome | None:
        """The new state of a message whose flags column is ``column``; None when it does not change."""
        try:
            return self._outcomes[column]
        except KeyError:
            pass
        cur = frozenset(column.split())
        mode = self._mode
        if mode is StoreMode.ADD:
            new = cur | self._wanted
        elif mode is StoreMode.REMOVE:
            new = cur - self._wanted
        else:
            new = self._wanted
        outcome = None if new == cur else self._state(new)
        self._outcomes[column] = outcome
        return outcome

    def _state(self, flags: frozenset[str]) -> Outcome:
        key = (self._keywords, flags)
        hit = _STATES.get(key)
        if hit is not None:
            return hit
        keywords = frozenset(f for f in flags if f not in SYSTEM_FLAGS)
        letters = self._letters
        lettered = all(k in letters for k in keywords)
        if lettered:
            info = info_string(flags - keywords, "".join(letters[k] for k in keywords))
        else:
            info = self._info_for(set(flags))  # a keyword without a letter: the folder may add one
        outcome = (info, flags_dump(flags), flags, frozenset(f for f in keywords if not f.startswith("\\")))
        if lettered:
            if len(_STATES) >= _STATES_MAX:
                _STATES.clear()
            _STATES[key] = outcome
        return outcome


class FileMoved(Exception):
    """A message file is not at the name the index has for it: another program renamed it (its flags
    may have changed), moved it out of ``new/`` or removed it."""


def rename_to(root: str, filename: str, info: str, follow: bool = True) -> str | None:
    """Rename the file ``filename`` (``cur/...`` or ``new/...`` under the folder ``root``) into ``cur/``
    with ``info``; follows a file renamed meanwhile by another writer. The new name, or None when the
    file is gone. ``follow=False``: raise :class:`FileMoved` instead of following (the caller learns
    the file's new name and flags first)."""
    for _ in range(3):
        base = filename.partition("/")[2].partition(":")[0]
        new_rel = f"cur/{base}{INFO_SEP}{info}"
        try:
            os.rename(f"{root}/{filename}", f"{root}/{new_rel}")
            return new_rel
        except FileNotFoundError:
            if not follow:
                raise FileMoved(filename) from None
            found = find_by_base(root, base)
            if found is None:
                return None
            filename = found
    return None


def find_by_base(root: str, base: str) -> str | None:
    """``cur/<name>`` or ``new/<name>`` of the file whose base name is ``base``, None when none is."""
    for sub in ("cur", "new"):
        try:
            for fn in os.listdir(f"{root}/{sub}"):
                if fn == base or fn.startswith(base + ":"):
                    return f"{sub}/{fn}"
        except FileNotFoundError:
            continue
    return None
