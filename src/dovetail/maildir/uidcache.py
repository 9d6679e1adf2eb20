"""``dovecot-uidlist`` as parsed once per process: every session of a folder syncs against it, and a
large uidlist costs more to parse than the rest of a quiet sync.

A parsed uidlist is kept per path with the file's stat stamp; it is parsed again only when the stamp
moved, and when the same file only grew (Dovecot and Dovetail append new messages), only the lines
added are read. The parsed copies are shared: callers must not change them.
"""

from __future__ import annotations

import os
from pathlib import Path

from dovetail.log import get_logger
from dovetail.maildir import uidlist

log = get_logger("maildir")

# Parsed dovecot-uidlist per path: (stat stamp, Uidlist, by_basename).
_UIDLISTS: dict[str, tuple[tuple, uidlist.Uidlist, dict[str, int]]] = {}
_UIDLIST_CACHE_MAX = 256


def read(path: Path) -> uidlist.Uidlist | None:
    """The uidlist at ``path`` parsed afresh; None when missing, or corrupt (it is renumbered then)."""
    try:
        return uidlist.read(path)
    except uidlist.UidlistCorrupt as exc:
        log.warning("corrupt dovecot-uidlist, renumbering", path=str(path.parent), error=str(exc))
        return None


def cached(path: Path) -> tuple[uidlist.Uidlist | None, dict[str, int]]:
    """The uidlist and its basename map, parsed again only when the file's stamp moved."""
    key = str(path)
    try:
        st = os.stat(key)
    except FileNotFoundError:
        return None, {}
    stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
    hit = _UIDLISTS.get(key)
    if hit is not None and hit[0] == stamp:
        return hit[1], hit[2]
    if hit is not None and hit[0][2] == st.st_ino and hit[0][1] < st.st_size:
        grown = _read_appended(key, hit, st.st_size)
        if grown is not None:
            _UIDLISTS[key] = (stamp, grown[0], grown[1])
            return grown
    ul = read(path)
    by_base = ul.by_basename() if ul is not None else {}
    if ul is not None:
        if len(_UIDLISTS) >= _UIDLIST_CACHE_MAX:
            _UIDLISTS.pop(next(iter(_UIDLISTS)), None)
        _UIDLISTS[key] = (stamp, ul, by_base)
    return ul, by_base


def _read_appended(key: str, hit: tuple, size: int) -> tuple[uidlist.Uidlist, dict[str, int]] | None:
    """The cached uidlist plus the lines appended to the same file since it was read (Dovecot and
    Dovetail append new messages; a rewrite is a new file), or None when that cannot be told."""
    old_size = hit[0][1]
    try:
        with open(key, "rb") as f:
            if not _same_header(f.readline(1024), hit[1]):
                return None
            f.seek(old_size - 1)
            tail = f.read(size - old_size + 1)
    except OSError:
        return None
    if len(tail) != size - old_size + 1 or not tail.startswith(b"\n") or not tail.endswith(b"\n"):
        return None
    try:
        ul, added = uidlist.extend(hit[1], tail[1:].decode("utf-8", "surrogateescape"))
    except uidlist.UidlistCorrupt:
        return None
    by_base = dict(hit[2])
    by_base.update((base, uid) for uid, (base, _ext) in added.items())
    return ul, by_base


def _same_header(line: bytes, ul: uidlist.Uidlist) -> bool:
    """Whether a version 3 header ``line`` names the cached uidlist's UIDVALIDITY and GUID: the file at
    the same inode is then that list, grown. A folder deleted and made again can get a new uidlist on
    the inode of the old one (a file system reuses freed inodes), larger than the old one was; reading
    only its "appended" lines would keep the old UIDVALIDITY, and the index would be reset to it."""
    head = line.split()
    if not head or head[0] != b"3":
        return False
    uv = f"V{ul.uidvalidity}".encode()
    guid = f"G{ul.guid}".encode() if ul.guid else None
    return uv in head and (guid is None or guid in head)


def remember(path: Path, ul: uidlist.Uidlist, by_base: dict[str, int]) -> None:
    """Cache the uidlist just written (the caller holds its lock, so nobody changed it since): the
    next sync of any session of this process finds it without parsing the file again."""
    key = str(path)
    try:
        st = os.stat(key)
    except FileNotFoundError:
        return
    _UIDLISTS.pop(key, None)
    if len(_UIDLISTS) >= _UIDLIST_CACHE_MAX:
        _UIDLISTS.pop(next(iter(_UIDLISTS)), None)
    _UIDLISTS[key] = ((st.st_mtime_ns, st.st_size, st.st_ino), ul, by_base)


def by_base_of(path: Path, ul: uidlist.Uidlist) -> dict[str, int]:
    """``ul``'s basename -> UID map: the cached one when ``ul`` is the cached uidlist of ``path``."""
    hit = _UIDLISTS.get(str(path))
    return hit[2] if hit is not None and hit[1] is ul else ul.by_basename()
