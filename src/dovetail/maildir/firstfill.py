"""The first sync of a folder whose index holds no message, made column by column.

A fresh 10,000-message Maildir is numbered and indexed at its first SELECT. Going file by file (a
``Listed``, a sort key, a uidlist record, an index row, entries of the uid -> file map and of the
facts: a few Python objects and calls each) cost most of that SELECT. When every name in ``cur/`` is
of the usual form ``<secs>.M<usecs>P<...>,S=<size>,W=<vsize>:2,<info>`` (what Dovecot and Dovetail
write), one regular expression over all the names gives them as columns, and the rest is made with
``map``/``zip``/``sort`` over those columns, whose loops run in C instead of the interpreter. Few
objects are made a file, and few of them tuples, which the cycle collector counts (a full collection
of a busy process costs tens of milliseconds): names are ordered by sorting indices by an integer,
and the insert takes its rows one at a time from a ``zip``. Any other folder (a name of another
form, a dot file, files left in ``new/`` by EXAMINE, a uidlist that numbers only some of the files)
is left to the ordinary first fill, file by file (:func:`~dovetail.maildir.syncapply.first_rows`),
which gives the same UIDs and rows.

The UIDs are written and fsynced to ``dovecot-uidlist`` (under its lock, as Dovecot does) before the
index learns of them, as in every sync.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import add, mul
from pathlib import Path

from dovetail.maildir import syncplan, uidcache, uidlist
from dovetail.maildir.index import DATE_UNKNOWN, flags_dump
from dovetail.maildir.lock import DotLock

_MICROS_LIMIT = 1 << 32  # a "microseconds" part this large leaves the name to the fill file by file
# One whole name a line: the basename (the delivery time first, the sizes last), then the info.
# The same names syncplan.delivery_order and syncapply's size pattern read, with ASCII digits only.
_USUAL_NAME = re.compile(r"^(([0-9]+)\.M([0-9]+)P[^:\n]*,S=([0-9]+),W=([0-9]+)):2,([^\n]*)$", re.M)


@dataclass(slots=True)
class UsualNames:
    """The names of ``cur/``, column by column, in one order (a row is one file)."""

    names: Sequence[str]  # the file name in cur/
    bases: Sequence[str]
    infos: Sequence[str]  # after ":2,"
    sizes: Sequence[int]
    vsizes: Sequence[int]


def usual_names(cur_names: list[str]) -> UsualNames | None:
    """The columns of ``cur_names`` in the order files are numbered (see
    :func:`~dovetail.maildir.syncplan.unnumbered`: by the seconds and microseconds at the start of the
    name, then by the name); None unless every name is of the usual form (not a dot file, a name
    without sizes or without info, a newline in a name) and no basename is found twice."""
    if not cur_names:
        return None
    text = "\n".join(cur_names)
    if text.count("\n") != len(cur_names) - 1:
        return None
    found = _USUAL_NAME.findall(text)
    if len(found) != len(cur_names):
        return None
    bases, secs, usecs, sizes, vsizes, infos = zip(*found, strict=True)
    del found  # its tuples count towards the garbage collector's next collection until freed
    n = len(bases)
    if len(set(bases)) != n:
        return None
    # Ordered by one integer a file, (seconds << 32) + microseconds, and by the name where two are equal
    # (a stable sort after one by name): sorting indices by integers makes no tuple a file.
    micros = list(map(int, usecs))
    if max(micros) >= _MICROS_LIMIT:
        return None
    keys = list(map(add, map(mul, map(int, secs), repeat(_MICROS_LIMIT)), micros))
    if len(set(keys)) == n:
        order = sorted(range(n), key=keys.__getitem__)
    else:
        order = sorted(range(n), key=bases.__getitem__)
        order.sort(key=keys.__getitem__)

    def pick(column: Sequence) -> list:
        return list(map(column.__getitem__, order))

    return UsualNames(pick(cur_names), pick(bases), pick(infos), pick(list(map(int, sizes))),
                      pick(list(map(int, vsizes))))


def in_uid_order(cols: UsualNames, uids: list[int]) -> tuple[UsualNames, Sequence[int]]:
    """``cols`` numbered ``uids`` (in their order), ordered by UID; with the UIDs in that order."""
    keyed = sorted(zip(uids, cols.names, cols.bases, cols.infos, cols.sizes, cols.vsizes, strict=True))
    in_order, names, bases, infos, sizes, vsizes = zip(*keyed, strict=True)
    return UsualNames(names, bases, infos, sizes, vsizes), in_order


def uids_known(cols: UsualNames, by_base: Mapping[str, int]) -> list[int] | None:
    """The UIDs the uidlist gives ``cols`` (in their order); None when it lacks one of them."""
    uids = list(map(by_base.get, cols.bases))
    return None if None in uids else uids  # type: ignore[return-value]


def number_all(path: Path, cols: UsualNames, new_uidvalidity: Callable[[], int]) -> uidlist.Uidlist | None:
    """Give UIDs to every file of ``cols`` (in delivery order), in this order, in a folder whose uidlist
    has no record (creating it, with a UIDVALIDITY from ``new_uidvalidity``, when missing); the
    uidlist is written and fsynced. None, writing nothing, when under the lock the uidlist turns out
    to have records (another writer numbered files meanwhile)."""
    ul_path = path / uidlist.UIDLIST
    with DotLock(path / uidlist.LOCK):
        cached, _by_base = uidcache.cached(ul_path)
        if cached is not None and cached.entries:
            return None
        if cached is None:
            cached = uidlist.Uidlist(uidvalidity=new_uidvalidity(), nextuid=1, guid=uuid.uuid4().hex)
        first = cached.nextuid
        uids = range(first, first + len(cols.bases))
        ul = uidlist.Uidlist(cached.uidvalidity, first + len(uids), cached.guid, list(cached.header_extra),
                             dict(zip(uids, zip(cols.bases, repeat(""), strict=False), strict=True)))
        uidlist.write(ul_path, ul)
        uidcache.remember(ul_path, ul, dict(zip(cols.bases, uids, strict=True)))
        return ul


def columns(cols: UsualNames, keywords: Mapping[int, str]) -> tuple[list[str], list[str]]:
    """The index's ``filename`` ("cur/<name>") and ``flags`` columns of ``cols``."""
    flag_cols = {info: flags_dump(syncplan.flags_of(info, keywords)) for info in set(cols.infos)}
    return list(map("cur/".__add__, cols.names)), list(map(flag_cols.__getitem__, cols.infos))


class Rows:
    """The index rows of ``cols`` numbered ``uids``, as :func:`~dovetail.maildir.syncapply.first_rows`
    gives them: ``(uid, basename, filename, info, flags, size, vsize, idate)``. Made anew by each
    iteration (``zip`` hands the same tuple over again when the one before was let go, as an insert
    does), so the rows need not exist all at once; iterable more than once (the index may run its
    statements again, see :mod:`~dovetail.maildir.indexdb`)."""

    def __init__(self, cols: UsualNames, uids: Sequence[int], filenames: list[str], flags: list[str]) -> None:
        self.columns = (uids, cols.bases, filenames, cols.infos, flags, cols.sizes, cols.vsizes)

    def __len__(self) -> int:
        return len(self.columns[0])

    def __iter__(self) -> Iterator[tuple]:
        return zip(*self.columns, repeat(DATE_UNKNOWN), strict=False)
