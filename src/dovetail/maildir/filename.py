"""Maildir file names: ``<base>[,S=<size>][,W=<vsize>]:2,<flags>``, unique names for new files."""

from __future__ import annotations

import itertools
import os
import socket
import time
from dataclasses import dataclass

from dovetail.storage.api import ANSWERED, DELETED, DRAFT, FLAGGED, SEEN

FLAG_LETTERS: dict[str, str] = {"D": DRAFT, "F": FLAGGED, "R": ANSWERED, "S": SEEN, "T": DELETED}
LETTER_OF: dict[str, str] = {v: k for k, v in FLAG_LETTERS.items()}
INFO_SEP = ":2,"

_counter = itertools.count(1)


@dataclass(frozen=True, slots=True)
class MaildirName:
    basename: str  # without the ":2,..." info, as dovecot-uidlist stores it
    info: str  # letters after ":2," ("" when none or when the file is in new/)
    size: int | None
    vsize: int | None

    @property
    def system_flags(self) -> frozenset[str]:
        return frozenset(FLAG_LETTERS[c] for c in self.info if c in FLAG_LETTERS)

    @property
    def keyword_letters(self) -> str:
        return "".join(c for c in self.info if "a" <= c <= "z")


def parse_name(filename: str) -> MaildirName:
    base, _, rest = filename.partition(":")
    info = rest[2:] if rest.startswith("2,") else ""
    size = vsize = None
    for field in base.split(",")[1:]:
        if field.startswith("S=") and field[2:].isdigit():
            size = int(field[2:])
        elif field.startswith("W=") and field[2:].isdigit():
            vsize = int(field[2:])
    return MaildirName(base, info, size, vsize)


def size_in_name(filename: str) -> int | None:
    """The ``S=`` field of a file name as :func:`parse_name` reads it, or None; without building a
    :class:`MaildirName`, since usage counting calls it for every file of a mailbox."""
    base = filename.split(":", 1)[0]
    at = base.find(",S=")
    while at >= 0:
        end = base.find(",", at + 3)
        digits = base[at + 3 :] if end < 0 else base[at + 3 : end]
        if digits.isascii() and digits.isdigit():
            return int(digits)
        at = base.find(",S=", at + 3)
    return None


def sizes_in_name(filename: str) -> tuple[int | None, int | None]:
    """The ``S=`` and ``W=`` fields of a file name as :func:`parse_name` reads them (None when absent):
    a sync reads them from every new file's name, so without building a :class:`MaildirName`."""
    base = filename.partition(":")[0]
    if "," not in base:
        return None, None
    size = vsize = None
    for field in base.split(",")[1:]:
        if field[:2] == "S=" and field[2:].isdigit():
            size = int(field[2:])
        elif field[:2] == "W=" and field[2:].isdigit():
            vsize = int(field[2:])
    return size, vsize


def info_string(system_flags: frozenset[str], keyword_letters: str, extra: str = "") -> str:
    """Flags suffix letters in ASCII order (Maildir rule): system flags, then keyword letters."""
    letters = {LETTER_OF[f] for f in system_flags if f in LETTER_OF}
    letters.update(keyword_letters)
    letters.update(c for c in extra if c.isupper() and c not in FLAG_LETTERS)
    return "".join(sorted(letters))


def new_basename(size: int, vsize: int) -> str:
    """``<secs>.M<usecs>P<pid>Q<n>.<host>,S=<size>,W=<vsize>``, unique per host."""
    now = time.time()
    secs = int(now)
    usec = int((now - secs) * 1_000_000)
    host = socket.gethostname().replace("/", "\\057").replace(":", "\\072").replace(",", "\\054")
    return f"{secs}.M{usec}P{os.getpid()}Q{next(_counter)}.{host},S={size},W={vsize}"
