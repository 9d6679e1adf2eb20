"""What a folder sync has to change, decided from plain data: no file, lock or SQLite is touched here.

A sync compares three pictures of one Maildir folder: the names found in ``new/`` and ``cur/``,
``dovecot-uidlist`` (basename -> UID) and the index (UID -> ``"sub/filename"``). The functions here
turn those pictures into the changes to make (files to move from ``new/`` to ``cur/``, basenames to
number, uidlist records to drop, index rows to add, rename or expunge) as plain values;
:mod:`dovetail.maildir.syncapply` carries them out. Kept apart so the decisions can be read on their
own and tested on arbitrary folders without a disk.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from dovetail.maildir import keywords as kwfile
from dovetail.maildir.filename import INFO_SEP, parse_name


@dataclass(slots=True)
class Listed:
    """Where a message's file was found: ``sub`` is "cur" or "new"."""

    sub: str
    filename: str


@dataclass(slots=True)
class Rename:
    """A known message whose file has another name now; ``flags`` is None when its flags (the info
    after ``:2,``) did not change, so that only the name is written."""

    uid: int
    filename: str  # "cur/..." or "new/..."
    info: str
    flags: list[str] | None


@dataclass(slots=True)
class Insert:
    """A numbered file the index does not know yet (its facts come from its name)."""

    uid: int
    listed: Listed
    filename: str
    info: str
    flags: list[str]


@dataclass(slots=True)
class SyncPlan:
    """The index changes one sync makes, all under one modseq."""

    expunge: list[int] = field(default_factory=list)
    renames: list[Rename] = field(default_factory=list)
    inserts: list[Insert] = field(default_factory=list)
    uidnext: int | None = None  # the index's new UIDNEXT, when the uidlist's is past it

    def __bool__(self) -> bool:
        return bool(self.expunge or self.renames or self.inserts or self.uidnext is not None)


@dataclass(slots=True)
class Numbering:
    """UIDs given to basenames the uidlist did not know (``added``, in order), on top of its records."""

    entries: dict[int, tuple[str, str]]
    nextuid: int
    by_base: dict[str, int]
    added: list[tuple[int, str]]


def base_of(filename: str) -> str:
    """The basename a uidlist keys a file by: its name without the ``:2,<info>`` part."""
    return filename.partition(":")[0]


def moves_into_cur(new_names: Iterable[str]) -> list[tuple[str, str]]:
    """(name in ``new/``, name in ``cur/``) for each message in ``new/``, in listing order: a file
    without info gets the empty one (``:2,``) on its way, as every Maildir reader does."""
    return [(fn, fn if INFO_SEP in fn else fn + INFO_SEP) for fn in new_names if not fn.startswith(".")]


def listing_of(
    new_names: Iterable[str], cur_names: Iterable[str], moved: Mapping[str, str] | None
) -> dict[str, Listed]:
    """basename -> where the file is. ``moved`` maps the ``new/`` names moved to ``cur/`` to their new
    names (a name missing from it vanished on the way), or is None when nothing was moved. A basename
    found twice is taken from ``cur/`` (the last one listed there), else from the first in ``new/``."""
    found: dict[str, Listed] = {}
    for fn in new_names:
        if fn.startswith("."):
            continue
        base = fn.partition(":")[0]
        if moved is not None:
            target = moved.get(fn)
            if target is not None:
                found[base] = Listed("cur", target)
        elif base not in found:
            found[base] = Listed("new", fn)
    for fn in cur_names:
        if not fn.startswith("."):
            found[fn.partition(":")[0]] = Listed("cur", fn)
    return found


_USUAL_NAME = re.compile(r"(\d+)\.M(\d+)P")


def delivery_order(basename: str) -> tuple:
    """Order unnumbered files by delivery time (the name starts with seconds and microseconds)."""
    usual = _USUAL_NAME.match(basename)  # "<secs>.M<usecs>P...": the common case, without splitting
    if usual is not None:
        return (int(usual[1]), int(usual[2]), basename)
    head = basename.split(".", 2)
    secs = int(head[0]) if head[0].isdigit() else 0
    usec = 0
    if len(head) > 1 and head[1].startswith("M"):
        digits = "".join(ch for ch in head[1][1:].split("P")[0] if ch.isdigit())
        usec = int(digits) if digits else 0
    return (secs, usec, basename)


def unnumbered(listing: Mapping[str, Listed], by_base: Mapping[str, int]) -> list[str]:
    """The listed basenames the uidlist has no UID for, in the order they are to be numbered."""
    usual = _USUAL_NAME.match
    keyed = []
    for b in listing:
        if b not in by_base:
            m = usual(b)  # delivery_order's common case, inline: a first sync numbers every file
            keyed.append((int(m[1]), int(m[2]), b) if m is not None else delivery_order(b))
    keyed.sort()
    return [k[2] for k in keyed]


def number(
    entries: Mapping[int, tuple[str, str]], nextuid: int, by_base: Mapping[str, int], basenames: Iterable[str]
) -> Numbering:
    """Give the next UIDs, in order, to the ``basenames`` that ``by_base`` has none for. The inputs
    (a shared cached uidlist) are left unchanged."""
    new_entries, new_by_base, added = dict(entries), dict(by_base), []
    uid = nextuid
    for base in basenames:
        if base not in new_by_base:
            new_entries[uid] = (base, "")
            new_by_base[base] = uid
            added.append((uid, base))
            uid += 1
    return Numbering(new_entries, uid, new_by_base, added)


def vanished(entries: Mapping[int, tuple[str, str]], listed: Collection[str], keep: Iterable[str]) -> list[int]:
    """The uidlist records whose file is neither ``listed`` nor one of ``keep`` (being numbered now)."""
    keep = set(keep)
    return [u for u, (b, _ext) in entries.items() if b not in listed and b not in keep]


def flags_of(info: str, keywords: Mapping[int, str]) -> list[str]:
    """The flags a Maildir info string stands for: system flags, then the keywords its letters name
    in ``dovecot-keywords`` (letters naming no keyword are dropped), each list sorted."""
    name = parse_name("x:2," + info)
    kws = [keywords.get(kwfile.index_of(c)) for c in name.keyword_letters]
    return sorted(name.system_flags) + sorted({k for k in kws if k})


def info_in(item: Listed) -> str:
    """The flags part of a listed file's name (a file in ``new/`` has none yet)."""
    if item.sub != "cur":
        return ""
    rest = item.filename.partition(":")[2]
    return rest[2:] if rest.startswith("2,") else ""


def agrees(
    listing: Mapping[str, Listed], by_base: Mapping[str, int], known: Collection[str], index_uidnext: int, nextuid: int
) -> bool:
    """Whether the numbered files are exactly the ``"sub/filename"`` names the index ``known`` and
    its UIDNEXT is not behind the uidlist's: then there is nothing to write."""
    on_disk = {f"{item.sub}/{item.filename}" for b, item in listing.items() if b in by_base}
    return on_disk == known and index_uidnext >= nextuid


def to_parse(
    listing: Mapping[str, Listed], by_base: Mapping[str, int], files: Mapping[int, str]
) -> list[tuple[int, Listed]]:
    """The numbered files the index has no row for: their facts are looked at before the index is
    locked, so that other writers do not wait for that."""
    out = []
    for b, item in listing.items():
        uid = by_base.get(b)
        if uid is not None and uid not in files:
            out.append((uid, item))
    return out


def plan(
    listing: Mapping[str, Listed],
    by_base: Mapping[str, int],
    files: Mapping[int, str],
    keywords: Mapping[int, str],
    index_uidnext: int,
    nextuid: int,
) -> SyncPlan:
    """The index changes that make ``files`` (the index's uid -> ``"sub/filename"``) match the
    ``listing`` numbered by ``by_base``. A message whose file is listed is never expunged, even when
    the uidlist does not number its basename yet."""
    present = {by_base[b]: listing[b] for b in listing if b in by_base}
    out = SyncPlan()
    out.expunge = [u for u, fn in files.items() if u not in present and fn[4:].partition(":")[0] not in listing]
    flag_lists: dict[str, list[str]] = {}  # a folder has few distinct info strings

    def flags_for(info: str) -> list[str]:
        found = flag_lists.get(info)
        if found is None:
            found = flag_lists[info] = flags_of(info, keywords)
        return list(found)

    for uid, item in present.items():
        stored = f"{item.sub}/{item.filename}"
        old = files.get(uid)
        if old == stored:
            continue
        info = info_in(item)
        if old is None:
            out.inserts.append(Insert(uid, item, stored, info, flags_for(info)))
            continue
        old_info = parse_name(old[4:]).info if old.startswith("cur/") else ""
        out.renames.append(Rename(uid, stored, info, flags_for(info) if old_info != info else None))
    if nextuid > index_uidnext:
        out.uidnext = nextuid
    return out
