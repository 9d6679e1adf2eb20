"""What a view's refresh learns of other views' changes: from the journal of the folder's shared facts
(read from the index once per process and change), from the index when the journal does not reach back
far enough, and, across processes, from the stamp a committed change left in the index."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from dovetail.maildir import folder as folder_mod
from dovetail.maildir import mailbox as mailbox_mod
from dovetail.storage import open_storage
from dovetail.storage.api import DELETED, FLAGGED, SEEN, StoreMode

MSG = b"From: Alice <alice@example.org>\nTo: bob@example.com\nSubject: hello %d\n\nbody\n"


def deliver(root: Path, n: int) -> None:
    name = f"{1700000000 + n}.V801I{n:x}M{n}.mx.example"
    (root / "tmp" / name).write_bytes(MSG % n)
    os.rename(root / "tmp" / name, root / "new" / name)


@pytest.fixture
def storage(tmp_path: Path):
    st = open_storage(tmp_path / "Maildir")
    for n in range(6):
        deliver(st.root, n)
    return st


def msg_row_reads(box) -> list[str]:
    """Spy on the statements ``box`` runs on its index connection that read changed rows."""
    seen: list[str] = []
    db = box.folder.index.db
    real = db.execute

    def execute(sql, params=()):
        if "FROM msg WHERE modseq>" in sql:
            seen.append(sql)
        return real(sql, params)

    db.execute = execute
    return seen


def test_views_of_one_process_share_what_changed(storage) -> None:
    a, b, c = (storage.select("INBOX") for _ in range(3))
    try:
        uids = list(a.uids)
        reads = msg_row_reads(c)
        a.store_flags(uids[:3], StoreMode.ADD, [FLAGGED])
        a.store_flags([uids[1]], StoreMode.ADD, [SEEN])  # changed twice: the last state is reported
        a.store_flags([uids[4]], StoreMode.ADD, [DELETED])
        a.expunge()
        seen_b = b.refresh()
        seen_c = c.refresh()
        assert reads == []  # b's refresh brought the shared facts up to date; c read no row
        for changes in (seen_b, seen_c):
            assert [st.uid for st in changes.flag_changes] == uids[:3]
            assert SEEN in changes.flag_changes[1].flags and FLAGGED in changes.flag_changes[1].flags
            assert changes.expunged_uids == [uids[4]]
        assert all(x is y for x, y in zip(seen_b.flag_changes, seen_c.flag_changes, strict=True))
        assert not c.refresh().flag_changes  # told once
        assert not a.refresh().flag_changes  # a's own changes are not echoed back
        assert list(b.uids) == list(c.uids) == [u for u in uids if u != uids[4]]
    finally:
        for box in (a, b, c):
            box.close()


def test_new_mail_and_recent_flags_through_the_journal(storage) -> None:
    a = storage.select("INBOX")
    b = storage.select("INBOX")
    try:
        deliver(storage.root, 20)
        changes = b.refresh()  # b claims the new message as \Recent
        assert len(changes.new_uids) == 1
        new = changes.new_uids[0]
        a.refresh()
        a.store_flags([new], StoreMode.ADD, [SEEN])
        (st,) = b.refresh().flag_changes
        assert st.uid == new and st.recent and SEEN in st.flags
    finally:
        a.close()
        b.close()


def test_a_view_behind_the_journal_reads_the_index(storage, monkeypatch) -> None:
    monkeypatch.setattr(folder_mod, "JOURNAL_KEPT", 4)
    a = storage.select("INBOX")
    b = storage.select("INBOX")
    c = storage.select("INBOX")
    try:
        uids = list(a.uids)
        reads = msg_row_reads(b)
        for uid in uids:
            a.store_flags([uid], StoreMode.ADD, [FLAGGED])
            c.refresh()  # c's refreshes keep the shared facts (and the journal) moving on
        assert b.folder.state.journal_from > b._seen_modseq
        changes = b.refresh()
        assert reads != []  # b was too far behind: its rows came from the index
        assert [st.uid for st in changes.flag_changes] == uids
        assert all(FLAGGED in st.flags for st in changes.flag_changes)
    finally:
        a.close()
        b.close()
        c.close()


def test_a_change_committed_by_another_process_is_waited_for_not_listed(storage, monkeypatch) -> None:
    """A sync whose stamp was taken while another process's change was under way (files renamed, the
    index not committed yet) waits for the index's write lock and takes the stamp that change left in
    the index, instead of listing the directories."""
    a = storage.select("INBOX")
    b = storage.select("INBOX")
    b.folder.state = folder_mod.FolderState()  # as in another process
    frozen = folder_mod.time.time()
    monkeypatch.setattr(folder_mod.time, "time", lambda: frozen)
    try:
        b.refresh()
        victim = a.uids[2]
        renamed, waiting = threading.Event(), threading.Event()
        real_rename, real_wait = mailbox_mod.rename_to, type(b.folder)._writer_done

        def rename(root, filename, info, *follow):
            out = real_rename(root, filename, info, *follow)
            renamed.set()
            assert waiting.wait(10)  # b is about to wait for this transaction
            return out

        def writer_done(self):
            waiting.set()
            return real_wait(self)

        monkeypatch.setattr(mailbox_mod, "rename_to", rename)
        monkeypatch.setattr(b.folder, "_writer_done", writer_done.__get__(b.folder))
        store = threading.Thread(target=a.store_flags, args=([victim], StoreMode.ADD, [SEEN]))
        store.start()
        assert renamed.wait(10)
        listings: list[str] = []
        real_listdir = os.listdir
        monkeypatch.setattr(folder_mod.os, "listdir", lambda path: listings.append(path) or real_listdir(path))
        changes = b.refresh()
        store.join(10)
        assert waiting.is_set() and listings == []
        assert [st.uid for st in changes.flag_changes] == [victim]
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("foreign", ["rename", "delivery"])
def test_a_foreign_change_is_still_listed_after_the_wait(storage, monkeypatch, foreign) -> None:
    b = storage.select("INBOX")
    try:
        b.refresh()
        cur = storage.root / "cur"
        if foreign == "rename":
            name = sorted(os.listdir(cur))[0]
            os.rename(cur / name, cur / (name.partition(":")[0] + ":2,T"))  # as Dovecot would
            (st,) = b.refresh().flag_changes
            assert "\\Deleted" in st.flags
        else:
            deliver(storage.root, 30)  # as Postfix would
            assert len(b.refresh().new_uids) == 1
    finally:
        b.close()
