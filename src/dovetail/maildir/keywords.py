"""``dovecot-keywords``: ``<index> <name>`` lines; index n is the letter chr(ord('a') + n) in file names."""

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


def write(path: Path, keywords: dict[int, str]) -> None:
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text("".join(f"{i} {n}\n" for i, n in sorted(keywords.items())))
    os.replace(tmp, path)


def letter(idx: int) -> str:
    return chr(ord("a") + idx)


def index_of(letter_: str) -> int:
    return ord(letter_) - ord("a")
