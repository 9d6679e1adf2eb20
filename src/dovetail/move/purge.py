"""The old copies tenant moves leave behind, and their removal (``dovetail tenant move --purge-moved``).

Once a move switched, the old home sets the tenant's folder aside as ``mail/.moved-away/<tenant>.<move>``
instead of deleting it, as a dsync (``doveadm backup``/``sync``) migration leaves its source alone: the
operator removes it once satisfied that the new home holds everything. Nothing removes it by itself.
``--purge-moved`` removes those whose move finished more than ``--older-than`` days ago (7 by default, so a
copy stays long enough for the users to notice anything amiss); only folders of a finished (``cleaned``)
move are touched, and the live ``mail/<tenant>`` never is.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..directory.moves import MoveStore
from .endpoint import MOVED_AWAY

_NAME = re.compile(r"^(?P<tenant>[^./][^/]*)\.(?P<move>\d+)$")


@dataclass(frozen=True)
class MovedAway:
    path: Path
    tenant: str
    move_id: int
    finished_at: float | None  # when its move reached cleaned (None: no such finished move)
    size: int


def _size(root: Path) -> int:
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass
    return total


def moved_away(mail_root: Path, moves: MoveStore) -> list[MovedAway]:
    """The set-aside copies on this node, oldest move first."""
    base = mail_root / MOVED_AWAY
    found = []
    for entry in sorted(base.iterdir()) if base.is_dir() else ():
        m = _NAME.match(entry.name)
        if m is None or not entry.is_dir() or entry.is_symlink():
            continue
        record = moves.find(int(m.group("move")))
        finished = (record.updated_at if record is not None and record.state == "cleaned"
                    and record.tenant == m.group("tenant") else None)
        found.append(MovedAway(entry, m.group("tenant"), int(m.group("move")), finished, _size(entry)))
    return sorted(found, key=lambda c: c.move_id)


def purge_moved(mail_root: Path, moves: MoveStore, *, older_than_days: float, tenant: str | None = None,
                now: float | None = None) -> tuple[list[MovedAway], list[MovedAway]]:
    """Remove the copies of finished moves older than ``older_than_days`` (of ``tenant`` only, if given):
    ``(removed, kept)``."""
    cutoff = (time.time() if now is None else now) - older_than_days * 86400
    removed, kept = [], []
    for copy in moved_away(mail_root, moves):
        if tenant is not None and copy.tenant != tenant.strip().lower():
            continue
        if copy.finished_at is None or copy.finished_at > cutoff:
            kept.append(copy)
            continue
        shutil.rmtree(copy.path)
        removed.append(copy)
    return removed, kept
