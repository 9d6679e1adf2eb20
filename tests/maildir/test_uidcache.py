"""The process's parsed ``dovecot-uidlist`` (``uidcache``) against a new list on the old one's inode."""

from __future__ import annotations

import os
from pathlib import Path

from dovetail.maildir import uidcache, uidlist


def _rewrite_in_place(path: Path, text: str) -> None:
    """Put ``text`` in the file on its own inode, as a file system that hands a freed inode to the
    uidlist of a folder made again at the same path leaves it."""
    ino = os.stat(path).st_ino
    with open(path, "r+b") as f:
        f.write(text.encode())
        f.truncate()
    assert os.stat(path).st_ino == ino


def test_a_new_list_on_the_old_inode_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / uidlist.UIDLIST
    path.write_text("3 V1000 N3 G" + "a" * 32 + "\n1 1.base1\n2 1.base2\n")
    ul, _ = uidcache.cached(path)
    assert ul is not None and ul.uidvalidity == 1000
    # Same length up to the old end, a line boundary there, and grown: it looks appended to.
    _rewrite_in_place(path, "3 V2000 N3 G" + "b" * 32 + "\n1 2.base1\n2 2.base2\n3 2.base3\n")
    ul, by_base = uidcache.cached(path)
    assert ul is not None and ul.uidvalidity == 2000 and ul.guid == "b" * 32
    assert by_base == {"2.base1": 1, "2.base2": 2, "2.base3": 3}


def test_lines_appended_to_the_same_list_are_read_alone(tmp_path: Path) -> None:
    path = tmp_path / uidlist.UIDLIST
    path.write_text("3 V1000 N3 G" + "a" * 32 + "\n1 1.base1\n2 1.base2\n")
    first, _ = uidcache.cached(path)
    with open(path, "a") as f:
        f.write("3 1.base3\n")
    ul, by_base = uidcache.cached(path)
    assert ul is not None and ul.uidvalidity == 1000 and ul.nextuid == 4
    assert by_base == {"1.base1": 1, "1.base2": 2, "1.base3": 3}
    assert first is not None and first.entries.keys() == {1, 2}  # the cached copy is not changed
