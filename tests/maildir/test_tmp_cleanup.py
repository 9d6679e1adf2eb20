"""``tmp/`` cleanup takes only what writers left behind: a file a live APPEND dated in the past (its
internal date is set before the rename) or a COPY linked in from an old message is not "old"."""

from __future__ import annotations

import os
import time
from pathlib import Path

from dovetail.maildir.folder import Folder


def _folder(tmp_path: Path) -> Folder:
    root = tmp_path / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (root / sub).mkdir(parents=True)
    return Folder(root)


def test_a_file_dated_in_the_past_by_its_writer_survives_the_cleanup(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    written = folder.path / "tmp" / "1.M1P1.test"
    written.write_bytes(b"Subject: old date\n\nbody\n")
    two_days_ago = time.time() - 2 * 86400
    os.utime(written, (two_days_ago, two_days_ago))  # what APPEND does with an internal date
    old_message = folder.path / "cur" / "2.M2P2.test:2,S"
    old_message.write_bytes(b"Subject: copied\n\nbody\n")
    os.utime(old_message, (two_days_ago, two_days_ago))
    linked = folder.path / "tmp" / "3.M3P3.test"
    os.link(old_message, linked)  # what COPY does before its rename

    assert folder.clean_tmp(max_age=36 * 3600) == 0
    assert written.exists() and linked.exists()
    assert folder.clean_tmp(max_age=-60) == 2  # once the entries themselves are older than the limit
    assert not written.exists() and not linked.exists() and old_message.exists()
