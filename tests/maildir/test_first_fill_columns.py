"""The first fill made column by column (usual names all in ``cur/``) gives exactly what the fill
file by file gives: the same UIDs in the same order, the same rows, uidlist, map and facts; and any
folder it does not cover (a name of another form, files left in ``new/``, a uidlist numbering only
some files, directories changed under it) is filled file by file as before."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dovetail.maildir import firstfill, keywords, syncapply, uidlist
from dovetail.maildir.folder import Folder
from dovetail.storage import open_storage

from .test_first_fill import forget_process_state, link_tree, rows
from .test_lazy_index import message

# Seconds shared by several names, microseconds of different lengths: numbering follows the numbers
# (M9 before M10), not the characters.
NAMES = [
    (1_700_000_000, 9, "S"), (1_700_000_000, 10, ""), (1_700_000_000, 123456, "FS"), (1_699_999_999, 5, "a"),
    (1_700_000_001, 0, "Sb"), (1_700_000_000, 77, "RS"), (1_700_000_002, 3, "ab"), (1_700_000_000, 9999, "T"),
]


def write_corpus(root: Path) -> list[str]:
    """The names of ``NAMES`` written into ``cur/`` with sizes and flags; keywords a and b named."""
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    out = []
    for i, (secs, usecs, flags) in enumerate(NAMES):
        data = message(i)
        vsize = len(data) + data.count(b"\n")
        name = f"{secs}.M{usecs}P{i}.host,S={len(data)},W={vsize}:2,{flags}"
        (root / "cur" / name).write_bytes(data)
        out.append(name)
    keywords.write(root / keywords.KEYWORDS, {0: "$Important", 1: "Work"})
    return out


def snapshot(root: Path) -> tuple:
    box = open_storage(root).select("INBOX")
    try:
        folder = box.folder
        folder._refresh_mirror()  # read from the index when this process did not fill it
        ul = uidlist.read(root / uidlist.UIDLIST)
        assert ul is not None
        return (list(box.uids), rows(root), dict(folder.state.files), set(folder.state.cur),
                box.message_facts(), {u: b for u, (b, _e) in ul.entries.items()}, box.first_unseen_seq())
    finally:
        box.close()


def file_by_file_forbidden(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the fill file by file (and the sync of changes) fail: what follows must go by columns."""
    def forbidden(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("filled file by file")

    monkeypatch.setattr(Folder, "_fill", forbidden)
    monkeypatch.setattr(syncapply, "apply_plan", forbidden)


def test_columns_give_what_the_fill_file_by_file_gives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    corpus = tmp_path / "corpus"
    names = write_corpus(corpus)
    assert firstfill.usual_names(names) is not None
    by_columns, by_files = tmp_path / "columns", tmp_path / "files"
    for dest in (by_columns, by_files):
        link_tree(corpus, dest)
        (dest / keywords.KEYWORDS).write_bytes((corpus / keywords.KEYWORDS).read_bytes())
    # A dot file is no message, but leaves the folder to the fill file by file.
    (by_files / "cur" / ".hidden").write_bytes(b"")
    assert firstfill.usual_names(os.listdir(by_files / "cur")) is None
    forget_process_state()
    with monkeypatch.context() as patched:
        file_by_file_forbidden(patched)
        filled = snapshot(by_columns)
    forget_process_state()
    assert snapshot(by_files) == filled
    uids, index_rows = filled[0], filled[1]
    assert uids == list(range(1, len(NAMES) + 1))
    by_uid = {r[0]: r[1] for r in index_rows}
    assert [by_uid[u].split(".")[:2] for u in uids][:5] == [
        ["1699999999", "M5P3"], ["1700000000", "M9P0"], ["1700000000", "M10P1"], ["1700000000", "M77P5"],
        ["1700000000", "M9999P7"]]
    flags = {r[1].split(".")[1]: r[4] for r in index_rows}
    assert flags["M5P3"] == "$Important" and flags["M3P6"] == "$Important Work"
    assert flags["M0P4"] == "Work \\Seen" or flags["M0P4"] == "\\Seen Work"
    # The process's copies are the index's, read back afresh.
    forget_process_state()
    assert snapshot(by_columns)[2:4] == filled[2:4]


def test_files_waiting_in_new_are_moved_and_filled_by_columns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "Maildir"
    names = write_corpus(root)
    for name in names[:4]:
        os.rename(root / "cur" / name, root / "new" / name.split(":")[0])  # delivered, never seen
    examined = open_storage(root).select("INBOX", readonly=True)  # EXAMINE leaves them in new/
    try:
        assert len(examined.uids) == len(NAMES)
        assert len(os.listdir(root / "new")) == 4
    finally:
        examined.close()
    seen_by_examine = rows(root)
    forget_process_state()
    for suffix in ("", "-wal", "-shm"):  # filled afresh, this time by SELECT
        Path(str(root / "dovetail-index.sqlite") + suffix).unlink(missing_ok=True)
    with monkeypatch.context() as patched:
        file_by_file_forbidden(patched)
        uids, index_rows = snapshot(root)[:2]
    assert os.listdir(root / "new") == []
    assert uids == [r[0] for r in seen_by_examine]
    assert [r[1] for r in index_rows] == [r[1] for r in seen_by_examine]
    assert all(r[2].startswith("cur/") for r in index_rows)


def test_a_rebuilt_index_takes_the_uidlists_uids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "Maildir"
    write_corpus(root)
    before = snapshot(root)
    forget_process_state()
    for suffix in ("", "-wal", "-shm"):
        Path(str(root / "dovetail-index.sqlite") + suffix).unlink(missing_ok=True)
    with monkeypatch.context() as patched:
        file_by_file_forbidden(patched)
        after = snapshot(root)
    assert after[0] == before[0] and after[5] == before[5]
    assert [r[:4] for r in after[1]] == [r[:4] for r in before[1]]


def test_a_uidlist_numbering_some_files_is_followed(tmp_path: Path) -> None:
    root = tmp_path / "Maildir"
    names = write_corpus(root)
    late = names[0].split(":")[0]  # numbered first by another server, though delivered later
    ul = uidlist.Uidlist(uidvalidity=1234, nextuid=8, guid="g", entries={7: (late, "")})
    uidlist.write(root / uidlist.UIDLIST, ul)
    uids, index_rows = snapshot(root)[:2]
    assert {r[1]: r[0] for r in index_rows}[late] == 7
    assert uids == [7, *range(8, 8 + len(NAMES) - 1)]


def test_column_fill_steps_aside_when_the_directories_changed_under_it(tmp_path: Path) -> None:
    root = tmp_path / "Maildir"
    write_corpus(root)
    folder = Folder(root)
    try:
        stamp = folder.stamp()
        new, cur, moved = syncapply.list_names(root, True)
        (root / "cur" / "1700000100.M1P2.late,S=3,W=4:2,").write_bytes(b"x\n\n")
        assert not folder._fill_usual(new, cur, moved is not None, stamp, 0.0, True)
        assert rows(root) == []
        folder.sync(move_new=True)
        assert len(rows(root)) == len(NAMES) + 1
    finally:
        folder.close()


def test_column_fill_fills_when_the_listing_still_holds(tmp_path: Path) -> None:
    root = tmp_path / "Maildir"
    write_corpus(root)
    folder = Folder(root)
    try:
        stamp = folder.stamp()
        new, cur, moved = syncapply.list_names(root, True)
        folder._refresh_mirror()
        assert folder._fill_usual(new, cur, moved is not None, stamp, 0.0, True)
        assert [r[0] for r in rows(root)] == list(range(1, len(NAMES) + 1))
        assert folder.state.files == {r[0]: r[2] for r in rows(root)}
        assert folder.state.cur == set(cur)
    finally:
        folder.close()
