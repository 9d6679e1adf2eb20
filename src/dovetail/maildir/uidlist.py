"""``dovecot-uidlist`` version 3: read what Dovecot writes, write what Dovecot reads.

Format: a header ``3 V<uidvalidity> N<nextuid> G<guid>`` (other ``<key><value>`` fields kept), then one
line per message ``<uid> [<ext>...] :<basename>``. Dovecot may append lines to an existing file, and
older version 1 files (``1 <uidvalidity> <nextuid>`` / ``<uid> <basename>``) are still read.
Writes go to a temporary file renamed over the old one while ``dovecot-uidlist.lock`` is held; new
messages alone are appended to the file instead (as Dovecot does), which readers take in by reading
the next UID as one past the last line when that is more than the header's.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from dovetail.durable import write_fsync

UIDLIST = "dovecot-uidlist"
LOCK = "dovecot-uidlist.lock"
MAX_UID = 2**32 - 1


class UidlistCorrupt(ValueError):
    pass


@dataclass(slots=True)
class Uidlist:
    uidvalidity: int = 0
    nextuid: int = 1
    guid: str = ""
    header_extra: list[str] = field(default_factory=list)
    # uid -> (basename, extension string)
    entries: dict[int, tuple[str, str]] = field(default_factory=dict)

    def by_basename(self) -> dict[str, int]:
        return {base: uid for uid, (base, _ext) in self.entries.items()}


def parse(text: str) -> Uidlist:
    lines = text.split("\n")
    head = lines[0].split()
    if not head:
        raise UidlistCorrupt("empty uidlist")
    ul = Uidlist()
    version = head[0]
    if version == "1":
        if len(head) < 3 or not head[1].isdigit() or not head[2].isdigit():
            raise UidlistCorrupt("bad v1 header")
        ul.uidvalidity, ul.nextuid = int(head[1]), int(head[2])
    elif version == "3":
        for tok in head[1:]:
            key, val = tok[:1], tok[1:]
            if key == "V" and val.isdigit():
                ul.uidvalidity = int(val)
            elif key == "N" and val.isdigit():
                ul.nextuid = int(val)
            elif key == "G":
                ul.guid = val
            else:
                ul.header_extra.append(tok)
    else:
        raise UidlistCorrupt(f"unsupported uidlist version {version!r}")
    last = _records(lines[1:], version, 0, ul.entries)
    if ul.entries:
        ul.nextuid = max(ul.nextuid, last + 1)
    return ul


def _records(lines: list[str], version: str, last: int, into: dict[int, tuple[str, str]]) -> int:
    """Parse record lines into ``into``; returns the last UID (UIDs must ascend past ``last``)."""
    for line in lines:
        if not line:
            continue
        uid_s, _, rest = line.partition(" ")
        if not uid_s.isdigit():
            raise UidlistCorrupt("bad uid")
        uid = int(uid_s)
        if uid <= last or uid > MAX_UID:
            raise UidlistCorrupt("uids not ascending")
        last = uid
        if version == "1":
            base, ext = rest, ""
        else:
            colon = rest.find(":")
            if colon < 0:
                # "<uid> <basename>" without extensions or colon is accepted too
                ext, base = "", rest
            else:
                ext, base = rest[:colon].strip(), rest[colon + 1 :]
        if not base:
            raise UidlistCorrupt("empty file name")
        into[uid] = (base, ext)
    return last


def extend(ul: Uidlist, tail: str) -> tuple[Uidlist, dict[int, tuple[str, str]]]:
    """``ul`` (a version 3 uidlist, left unchanged) plus the records another writer appended to its
    file, given as the text after the part ``ul`` was read from: (the new uidlist, the added records)."""
    added: dict[int, tuple[str, str]] = {}
    last = _records(tail.split("\n"), "3", max(ul.entries, default=0), added)
    entries = dict(ul.entries)
    entries.update(added)
    grown = Uidlist(ul.uidvalidity, max(ul.nextuid, last + 1), ul.guid, list(ul.header_extra), entries)
    return grown, added


def format_uidlist(ul: Uidlist) -> str:
    head = ["3", f"V{ul.uidvalidity}", f"N{ul.nextuid}", f"G{ul.guid or uuid.uuid4().hex}", *ul.header_extra]
    out = [" ".join(head)]
    for uid in sorted(ul.entries):
        base, ext = ul.entries[uid]
        out.append(f"{uid} {ext} :{base}" if ext else f"{uid} :{base}")
    return "\n".join(out) + "\n"


def read(path: Path) -> Uidlist | None:
    """The uidlist at ``path`` or None when missing. Raises UidlistCorrupt."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return parse(data.decode("utf-8", "surrogateescape"))


def write(path: Path, ul: Uidlist) -> None:
    """Replace the uidlist atomically (caller holds the lock)."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    data = format_uidlist(ul).encode("utf-8", "surrogateescape")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        try:
            write_fsync(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk must not be left fuller
        raise


def append(path: Path, entries: list[tuple[int, str]]) -> bool:
    """Append ``(uid, basename)`` lines to the uidlist (caller holds the lock, and the UIDs follow
    the file's last one). False, writing nothing, when the file is not a version 3 uidlist ending with
    a whole line (an old version 1 file is rewritten as version 3 instead)."""
    fd = os.open(path, os.O_RDWR | os.O_APPEND)
    try:
        size = os.fstat(fd).st_size
        if size < 3 or os.pread(fd, 2, 0) != b"3 " or os.pread(fd, 1, size - 1) != b"\n":
            return False
        try:
            write_fsync(fd, "".join(f"{uid} :{base}\n" for uid, base in entries).encode("utf-8", "surrogateescape"))
        except OSError:
            os.ftruncate(fd, size)  # no half line left behind (a full disk): the file stays as it was
            raise
    finally:
        os.close(fd)
    return True
