"""``refresh_if_quiet``: the IMAP server skips the thread of a refresh when a few stats and the index's
commit counter say nothing changed, so it must never say "quiet" when a refresh would find something."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from dovetail.maildir import folder as folder_mod
from dovetail.maildir import mailbox as mailbox_mod
from dovetail.maildir.index import INDEX_FILE
from dovetail.storage import open_storage
from dovetail.storage.api import FLAGGED, SEEN, StoreMode

MSG = b"From: Alice <alice@example.org>\nSubject: hello %d\n\nbody\n"


def deliver(root: Path, n: int) -> None:
    name = f"{1700000000 + n}.V801I{n:x}M{n}.mx.example"
    (root / "tmp" / name).write_bytes(MSG % n)
    os.rename(root / "tmp" / name, root / "new" / name)


@pytest.fixture
def clock(monkeypatch):
    """Wall-clock time held still, so that the folder's fresh stamps stay trusted until moved on."""
    now = [folder_mod.time.time()]
    monkeypatch.setattr(folder_mod.time, "time", lambda: now[0])
    monkeypatch.setattr(mailbox_mod.time, "time", lambda: now[0])
    return now


@pytest.fixture
def storage(tmp_path: Path):
    st = open_storage(tmp_path / "Maildir")
    for n in range(4):
        deliver(st.root, n)
    return st


def test_quiet_until_another_view_changes_flags(storage, clock) -> None:
    a = storage.select("INBOX")
    b = storage.select("INBOX")
    assert a.refresh_if_quiet() is not None  # nothing happened since the select
    b.store_flags([b.uids[0]], StoreMode.ADD, [FLAGGED])
    assert a.refresh_if_quiet() is None
    assert [c.uid for c in a.refresh().flag_changes] == [b.uids[0]]
    quiet = a.refresh_if_quiet()
    assert quiet is not None and not quiet.flag_changes and not quiet.new_uids


def test_not_quiet_after_its_own_change_or_a_delivery(storage, clock) -> None:
    a = storage.select("INBOX")
    a.store_flags([a.uids[1]], StoreMode.ADD, [SEEN])
    assert a.refresh_if_quiet() is None  # its own index write: a refresh takes it in
    a.refresh()
    assert a.refresh_if_quiet() is not None
    deliver(storage.root, 9)  # another writer, not through the index
    assert a.refresh_if_quiet() is None
    assert len(a.refresh().new_uids) == 1
    assert a.refresh_if_quiet() is not None


def test_a_commit_that_moves_no_modseq_keeps_it_quiet(storage, clock) -> None:
    a = storage.select("INBOX")
    other = sqlite3.connect(storage.root / INDEX_FILE)
    with other:
        other.execute("INSERT OR REPLACE INTO meta VALUES ('test-note', '1')")
    assert a.refresh_if_quiet() is not None
    with other:
        other.execute("UPDATE meta SET value=CAST(value AS INTEGER)+1 WHERE key='highestmodseq'")
    other.close()
    assert a.refresh_if_quiet() is None


def test_a_dirty_stamp_is_not_trusted_once_its_window_passed(storage, clock) -> None:
    a = storage.select("INBOX")
    assert a.refresh_if_quiet() is not None
    clock[0] += 5  # the directories were changed within the clock tick of the listing: list again
    assert a.refresh_if_quiet() is None
    a.refresh()
    assert a.refresh_if_quiet() is not None


def test_pending_expunges_are_never_quiet(storage, clock) -> None:
    a = storage.select("INBOX")
    b = storage.select("INBOX")
    gone = b.uids[0]
    b.store_flags([gone], StoreMode.ADD, ["\\Deleted"])
    b.expunge([gone])
    a.refresh(allow_expunges=False)  # FETCH: the expunge waits
    assert a.refresh_if_quiet() is None
    assert a.refresh().expunged_uids == [gone]
