"""Views of one process share the folder's sync state; a message expunged by another view is still
served from the index (flags, sizes, ENVELOPE) until this view has been told of the expunge."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from dovetail.maildir import folder as folder_mod
from dovetail.maildir.index import INDEX_FILE, SCHEMA_VERSION
from dovetail.storage import open_storage
from dovetail.storage.api import DELETED, FLAGGED, MessageExpunged, StoreMode

MSG = b"From: Alice <alice@example.org>\nTo: bob@example.com\nSubject: hello %d\n\nbody\n"


def deliver(root: Path, n: int) -> None:
    name = f"{1700000000 + n}.V801I{n:x}M{n}.mx.example"
    (root / "tmp" / name).write_bytes(MSG % n)
    os.rename(root / "tmp" / name, root / "new" / name)


@pytest.fixture
def storage(tmp_path: Path):
    st = open_storage(tmp_path / "Maildir")
    for n in range(4):
        deliver(st.root, n)
    return st


def test_views_share_one_state_and_one_listing(storage, monkeypatch) -> None:
    a = storage.select("INBOX")
    b = storage.select("INBOX")
    assert a.folder.state is b.folder.state
    listings = []
    real = os.listdir

    def counting(path):
        listings.append(str(path))
        return real(path)

    monkeypatch.setattr(folder_mod.os, "listdir", counting)
    # Another writer's change is looked at once, by one listing for both views...
    name = next(iter(os.listdir(storage.root / "cur")))
    os.rename(storage.root / "cur" / name, storage.root / "cur" / (name.partition(":")[0] + ":2,S"))
    changes = b.refresh()
    assert len(changes.flag_changes) == 1
    first = len(listings)
    assert first > 0
    assert len(a.refresh().flag_changes) == 1
    assert len(listings) == first
    # ...and a change of our own is learned from the index, with no listing at all (the clock is held
    # still: the dirty-stamp recheck is tested below).
    frozen = folder_mod.time.time()
    monkeypatch.setattr(folder_mod.time, "time", lambda: frozen)
    a.store_flags([a.uids[0]], StoreMode.ADD, [FLAGGED])
    assert [c.uid for c in b.refresh().flag_changes] == [a.uids[0]]
    assert len(listings) == first
    monkeypatch.undo()
    a.close()
    assert b.folder.state.users == 1
    state = b.folder.state
    b.close()
    key = os.path.abspath(storage.root)
    assert key not in folder_mod._STATES
    # Kept warm for the next session (a bounded number of folders), then taken up again.
    assert folder_mod._IDLE_STATES[key] is state
    c = storage.select("INBOX")
    assert c.folder.state is state and key not in folder_mod._IDLE_STATES
    c.close()


def test_expunged_message_is_served_from_the_index_until_reported(storage) -> None:
    a = storage.select("INBOX")
    b = storage.select("INBOX")
    gone = b.uids[1]
    b.store_flags([gone], StoreMode.ADD, [DELETED, FLAGGED])
    assert b.expunge() == [gone]
    a.refresh(allow_expunges=False)
    assert gone in a.uids
    infos = a.fetch_info(list(a.uids), envelope=True, bodystructure=False, raw=True)
    assert [i.uid for i in infos] == list(a.uids)
    old = next(i for i in infos if i.uid == gone)
    assert FLAGGED in old.flags and b"hello 1" in old.envelope_imap and old.size > 0
    assert [f[0] for f in a.message_facts()] == list(a.uids)
    with pytest.raises(MessageExpunged):
        a.open_message(gone)
    changes = a.refresh()
    assert changes.expunged_uids == [gone] and gone not in a.uids
    assert [i.uid for i in a.fetch_info([gone], raw=True)] == []
    a.close()
    b.close()


def test_index_of_the_previous_schema_is_upgraded_in_place(storage) -> None:
    box = storage.select("INBOX")
    uids = list(box.uids)
    box.close()
    path = storage.root / INDEX_FILE
    db = sqlite3.connect(path)
    db.execute("DROP TABLE expunged")
    db.execute("CREATE TABLE expunged (uid INTEGER PRIMARY KEY, modseq INTEGER NOT NULL)")
    db.execute("INSERT INTO expunged VALUES (99, 1)")
    db.execute("UPDATE meta SET value='4' WHERE key='schema'")
    db.commit()
    db.close()
    box = storage.select("INBOX")
    assert list(box.uids) == uids
    assert box.expunged_since(0) == [99]  # the history survived the upgrade
    assert box.folder.index.get_meta("schema") == str(SCHEMA_VERSION)
    box.store_flags([uids[0]], StoreMode.ADD, [DELETED])
    assert box.expunge() == [uids[0]]
    box.close()


def test_header_cache_is_shared_and_dropped_with_the_uidvalidity(storage) -> None:
    a = storage.select("INBOX")
    b = storage.select("INBOX")
    cache = a.header_cache()
    assert cache is b.header_cache()
    cache[("from", a.uids[0])] = ["Alice <alice@example.org>"]
    assert b.header_cache()[("from", a.uids[0])] == ["Alice <alice@example.org>"]
    b._uidvalidity += 1  # what a recreated mailbox looks like to a view opened after it
    assert b.header_cache() == {}
    a.close()
    b.close()


def test_many_expunged_messages_are_served_from_the_index(tmp_path: Path) -> None:
    st = open_storage(tmp_path / "Many")
    for n in range(230):
        deliver(st.root, n)
    a = st.select("INBOX")
    b = st.select("INBOX")
    doomed = list(b.uids[:210])
    b.store_flags(doomed, StoreMode.ADD, [DELETED])
    assert b.expunge() == doomed
    a.refresh(allow_expunges=False)
    infos = a.fetch_info(list(a.uids), envelope=True, bodystructure=True, raw=True)
    assert [i.uid for i in infos] == list(a.uids) and len(infos) == 230
    assert all(i.envelope_imap and i.bodystructure_imap for i in infos)
    assert len(a.refresh().expunged_uids) == 210
    a.close()
    b.close()


def test_a_change_hidden_behind_an_unchanged_timestamp_is_found_after_the_dirty_delay(storage, monkeypatch) -> None:
    """A rename by another writer in the same clock tick as our own change leaves the directory's
    mtime where our stamp has it; the folder is listed again once DIRTY_SECONDS have passed."""
    a = storage.select("INBOX")
    b = storage.select("INBOX")
    a.store_flags([a.uids[0]], StoreMode.ADD, [FLAGGED])
    assert b.refresh().flag_changes
    cur = storage.root / "cur"
    st = os.stat(cur)
    victim = b.uids[2]
    row = b.folder.index.db.execute("SELECT filename FROM msg WHERE uid=?", (victim,)).fetchone()[0]
    os.rename(storage.root / row, cur / (row[4:].partition(":")[0] + ":2,S"))
    os.utime(cur, ns=(st.st_atime_ns, st.st_mtime_ns))  # as if it happened in the same tick
    assert not b.refresh().flag_changes  # the stamp still looks trusted...
    assert a.recheck_in() is not None and a.recheck_in() <= folder_mod.DIRTY_SECONDS
    later = folder_mod.time.time() + folder_mod.DIRTY_SECONDS + 0.1
    monkeypatch.setattr(folder_mod.time, "time", lambda: later)
    changes = b.refresh()  # ...until the dirty delay has passed
    assert [c.uid for c in changes.flag_changes] == [victim]
    assert "\\Seen" in changes.flag_changes[0].flags
    a.close()
    b.close()


def test_another_process_learns_our_changes_from_the_index_without_listing(storage, monkeypatch) -> None:
    """The index keeps the directory stamp it matches: a process that did not make the change finds
    the directories at that stamp and lists nothing; another writer's change still makes it list."""
    a = storage.select("INBOX")
    b = storage.select("INBOX")
    b.folder.state = folder_mod.FolderState()  # b now shares nothing in memory with a, as in another process
    frozen = folder_mod.time.time()
    monkeypatch.setattr(folder_mod.time, "time", lambda: frozen)
    b.refresh()
    listings = []
    real = os.listdir
    monkeypatch.setattr(folder_mod.os, "listdir", lambda path: listings.append(path) or real(path))
    a.store_flags([a.uids[0]], StoreMode.ADD, [FLAGGED])
    uid = a.append(b"Subject: appended\r\n\r\nhi\r\n")
    a.store_flags([a.uids[1]], StoreMode.ADD, [DELETED])
    a.expunge()
    changes = b.refresh()
    assert [c.uid for c in changes.flag_changes] == [a.uids[0]]
    assert changes.new_uids == [uid] and len(changes.expunged_uids) == 1
    assert listings == []
    name = next(n for n in real(storage.root / "cur") if ":2," in n and "S" not in n.partition(":2,")[2])
    os.rename(storage.root / "cur" / name, storage.root / "cur" / (name.partition(":")[0] + ":2,S"))
    assert len(b.refresh().flag_changes) == 1
    assert listings != []
    a.close()
    b.close()
