"""The first sync of a folder whose index knows no message fills the index in one bulk insert and
makes the process's copies of it from the rows it inserted: the rows, the facts and the UIDs must be
exactly what the ordinary sync gives, and the UIDs are in ``dovecot-uidlist`` (fsynced) before any
client sees them, so they survive a restart and agree across processes."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
from pathlib import Path

from dovetail.maildir import folderstate, syncapply, uidcache, uidlist
from dovetail.maildir.folder import Folder
from dovetail.maildir.index import INDEX_FILE
from dovetail.storage import open_storage

from .test_lazy_index import write_maildir

ROW = "uid, basename, filename, info, flags, size, vsize, idate"


def rows(root: Path) -> list[tuple]:
    db = sqlite3.connect(root / INDEX_FILE)
    try:
        return db.execute(f"SELECT {ROW} FROM msg ORDER BY uid").fetchall()
    finally:
        db.close()


def forget_process_state() -> None:
    """What a restarted process would not have: the parsed uidlists and the folders' shared state."""
    uidcache._UIDLISTS.clear()
    folderstate._STATES.clear()
    folderstate._IDLE_STATES.clear()


def link_tree(src: Path, dest: Path, names: list[str] | None = None) -> None:
    for sub in ("cur", "new", "tmp"):
        (dest / sub).mkdir(parents=True, exist_ok=True)
    for name in names if names is not None else os.listdir(src / "cur"):
        os.link(src / "cur" / name, dest / "cur" / name)


def test_first_fill_gives_the_rows_and_facts_of_an_ordinary_sync(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    write_maildir(corpus, 40)
    (corpus / "cur" / "1600000000.M5P9.other:2,RS").write_bytes(b"Subject: no sizes in the name\n\nx\n")
    names = sorted(os.listdir(corpus / "cur"))
    first = min(names, key=lambda n: int(n.split(".")[0]))
    filled, stepwise = tmp_path / "filled", tmp_path / "stepwise"
    link_tree(corpus, filled)
    # The other copy gets its first message alone, then the rest through a sync of changes.
    link_tree(corpus, stepwise, [first])
    open_storage(stepwise).select("INBOX").close()
    for name in names:
        if name != first:
            os.link(corpus / "cur" / name, stepwise / "cur" / name)
    boxes = [open_storage(filled).select("INBOX"), open_storage(stepwise).select("INBOX")]
    try:
        assert list(boxes[0].uids) == list(boxes[1].uids) == list(range(1, 42))
        assert rows(filled) == rows(stepwise)
        assert {r[4] for r in rows(filled)} >= {"\\Answered \\Seen", "\\Flagged \\Seen", ""}
        # The facts made from the inserted rows are the ones read back from the index.
        made = boxes[0].message_facts()
        folder = boxes[0].folder
        folder.state.facts = None
        assert boxes[0].message_facts() == made
        assert folder.state.files == dict((r[0], r[2]) for r in rows(filled))
        status = open_storage(filled).status("INBOX", ["MESSAGES", "UIDNEXT", "UNSEEN"])
        assert status == {"MESSAGES": 41, "UIDNEXT": 42, "UNSEEN": 20}
    finally:
        for box in boxes:
            box.close()


def _uids_in_child(root: str, out: multiprocessing.Queue) -> None:
    box = open_storage(Path(root)).select("INBOX")
    try:
        out.put(list(box.uids))
    finally:
        box.close()


def test_uids_of_a_first_select_survive_a_restart_and_agree_across_processes(tmp_path: Path) -> None:
    root = tmp_path / "Maildir"
    write_maildir(root, 30)
    box = open_storage(root).select("INBOX")
    try:
        shown = [(u, box.folder.state.files[u]) for u in box.uids]
        assert [(r[0], r[2]) for r in rows(root)] == shown
        uidvalidity = box.uidvalidity
    finally:
        box.close()
    # Durable before shown: the uidlist on disk numbers every file as the client saw it.
    on_disk = uidlist.read(root / uidlist.UIDLIST)
    assert on_disk is not None and on_disk.uidvalidity == uidvalidity
    assert {u: b for u, (b, _ext) in on_disk.entries.items()} == {u: fn[4:].split(":")[0] for u, fn in shown}
    forget_process_state()
    again = open_storage(root).select("INBOX")
    try:
        assert again.uidvalidity == uidvalidity
        assert list(again.uids) == [u for u, _fn in shown]
    finally:
        again.close()
    # An index deleted (it is a cache) is filled again with the same UIDs, from the uidlist.
    forget_process_state()
    for suffix in ("", "-wal", "-shm"):
        Path(str(root / INDEX_FILE) + suffix).unlink(missing_ok=True)
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    child = ctx.Process(target=_uids_in_child, args=(str(root), out))
    child.start()
    seen_by_child = out.get(timeout=60)
    child.join(timeout=60)
    assert child.exitcode == 0
    assert seen_by_child == [u for u, _fn in shown]
    assert [(r[0], r[2]) for r in rows(root)] == shown  # the child filled the index anew
    box = open_storage(root).select("INBOX")
    try:
        assert box.uidvalidity == uidvalidity and list(box.uids) == [u for u, _fn in shown]
    finally:
        box.close()


def _listed(folder: Folder) -> tuple:
    stamp = folder.stamp()
    listing = folder._list(False)
    ul, by_base = folder._numbered(listing)
    syncapply.reset_index(folder.index, ul)  # as a sync does for a new UIDVALIDITY
    folder._refresh_mirror()
    return listing, ul, by_base, stamp


def test_first_fill_steps_aside_when_the_directories_changed_under_it(tmp_path: Path) -> None:
    root = tmp_path / "Maildir"
    write_maildir(root, 5)
    folder = Folder(root)
    try:
        listing, ul, by_base, stamp = _listed(folder)
        (root / "cur" / "1700000100.M1P2.late,S=3,W=4:2,").write_bytes(b"x\n\n")
        assert not folder._fill(listing, ul, by_base, stamp, 0.0, stamp, False)
        assert rows(root) == []
        folder.sync()
        assert len(rows(root)) == 6
    finally:
        folder.close()


def test_first_fill_steps_aside_when_another_writer_filled_the_index(tmp_path: Path) -> None:
    root = tmp_path / "Maildir"
    write_maildir(root, 5)
    folder, other = Folder(root), Folder(root)
    try:
        listing, ul, by_base, stamp = _listed(folder)
        other.sync()
        before = rows(root)
        assert len(before) == 5
        assert not folder._fill(listing, ul, by_base, stamp, 0.0, stamp, False)
        assert rows(root) == before
    finally:
        folder.close()
        other.close()


def test_first_fill_fills_when_the_listing_still_holds(tmp_path: Path) -> None:
    root = tmp_path / "Maildir"
    write_maildir(root, 5)
    folder = Folder(root)
    try:
        listing, ul, by_base, stamp = _listed(folder)
        assert folder._fill(listing, ul, by_base, stamp, 0.0, stamp, False)
        assert [r[0] for r in rows(root)] == [1, 2, 3, 4, 5]
        assert folder.state.files == {r[0]: r[2] for r in rows(root)}
    finally:
        folder.close()
