"""``dovecot-keywords``: ``<index> <name>`` lines; index n is the letter chr(ord('a') + n) in file names.

Every flag change looks the keyword letters up, so :func:`read_cached` keeps the file's parse per
process and reads it again only when its stat data moved: writers (Dovecot and this module) replace the
file by a rename, which gives it a new inode, and an index is never given another name once written.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

KEYWORDS = "dovecot-keywords"
MAX_KEYWORDS = 26
_KEYWORD_BAD = set('(){ %*"\\]') | {chr(c) for c in range(0x20)} | {"\x7f"}


def valid_keyword(name: str) -> bool:
    return bool(name) and len(name) <= 100 and name.isascii() and not (set(name) & _KEYWORD_BAD) and (
        not name.startswith("\\")
    )


def read(path: Path) -> dict[int, str]:
    try:
        text = path.read_text("utf-8", "replace")
    except FileNotFoundError:
        return {}
    out: dict[int, str] = {}
    for line in text.splitlines():
        idx, _, name = line.partition(" ")
        if idx.isdigit() and int(idx) < MAX_KEYWORDS and name:
            out[int(idx)] = name
    return out


_CACHE: dict[str, tuple[tuple[int, int, int], dict[int, str]]] = {}
_CACHE_MAX = 4096


def read_cached(path: str) -> dict[int, str]:
    """:func:`read`, from the process's copy while the file's (mtime, size, inode) did not change; the
    caller gets a dict of its own."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return {}
    key = (st.st_mtime_ns, st.st_size, st.st_ino)
    hit = _CACHE.get(path)
    if hit is not None and hit[0] == key:
        return dict(hit[1])
    keywords = read(Path(path))
    if len(_CACHE) >= _CACHE_MAX:
        _CACHE.clear()
    _CACHE[path] = (key, keywords)
    return dict(keywords)


def write(path: Path, keywords: dict[int, str]) -> None:
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text("".join(f"{i} {n}\n" for i, n in sorted(keywords.items())))
    os.replace(tmp, path)


def letter(idx: int) -> str:
    return chr(ord("a") + idx)


def index_of(letter_: str) -> int:
    return ord(letter_) - ord("a")
