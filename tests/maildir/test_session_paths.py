"""The storage paths every command of a busy session takes: FETCH of ENVELOPE/BODYSTRUCTURE served from
the shared facts and the process's cache of IMAP bytes, STORE over many messages in a few statements,
the keyword map read again only when ``dovecot-keywords`` changes, and ``new/`` not listed while it
stays empty."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from dovetail.maildir import flagstore
from dovetail.maildir import keywords as kwfile
from dovetail.maildir import mailbox as mailbox_mod
from dovetail.maildir.folder import Folder
from dovetail.maildir.messagecache import IMAP_DATA
from dovetail.storage import open_storage
from dovetail.storage.api import FLAGGED, SEEN, StoreMode

MSG = b"From: Alice <alice@example.org>\nTo: bob@example.com\nSubject: hello %d\n\nbody %d\n"
COUNT = 12


def deliver(root: Path, n: int) -> None:
    name = f"{1700000000 + n}.V801I{n:x}M{n}.mx.example"
    (root / "tmp" / name).write_bytes(MSG % (n, n))
    os.rename(root / "tmp" / name, root / "new" / name)


@pytest.fixture
def storage(tmp_path: Path):
    st = open_storage(tmp_path / "Maildir")
    for n in range(COUNT):
        deliver(st.root, n)
    return st


def test_cached_fetch_gives_the_index_data_and_current_flags(storage) -> None:
    a = storage.select("INBOX")
    b = storage.select("INBOX")
    uids = list(a.uids)
    assert len(uids) >= mailbox_mod._CACHED_ROWS
    first = a.fetch_info(uids, envelope=True, bodystructure=True, raw=True)
    assert all(IMAP_DATA.get(a._key(u)) is not None for u in uids)
    db = a.folder.index.db
    stored = {u: (e, bs, body) for u, e, bs, body in
              db.execute("SELECT uid, envelope_imap, bodystructure_imap, body_imap FROM msg")}
    assert [(i.envelope_imap, i.bodystructure_imap, i.body_imap) for i in first] == [stored[u] for u in uids]
    assert b"hello 3" in first[3].envelope_imap
    assert all(i.internal_date.timestamp() > 0 for i in first)
    # Another view's STORE shows in the next FETCH at once (flags are never taken from the cache).
    b.store_flags(uids[:3], StoreMode.ADD, [FLAGGED])
    again = a.fetch_info(uids, envelope=True, bodystructure=False, raw=True)
    assert [FLAGGED in i.flags for i in again] == [True] * 3 + [False] * (len(uids) - 3)
    assert all(i.bodystructure_imap is None for i in again)
    a.close()
    b.close()


def test_store_over_many_messages_reads_them_in_chunks(storage, monkeypatch) -> None:
    monkeypatch.setattr(flagstore, "_CHUNK", 5)
    box = storage.select("INBOX")
    uids = list(box.uids)
    box.store_flags(uids[:4], StoreMode.ADD, [SEEN])
    result = box.store_flags(uids, StoreMode.ADD, ["$Label1", FLAGGED])
    assert [st.uid for st in result.changed] == uids
    assert all(st.keywords == frozenset({"$Label1"}) for st in result.changed)
    assert [SEEN in st.flags for st in result.changed] == [True] * 4 + [False] * (len(uids) - 4)
    names = sorted(os.listdir(storage.root / "cur"))
    assert len(names) == len(uids) and all({"F", "a"} <= set(n.split(":2,")[1]) for n in names)
    assert box.store_flags(uids, StoreMode.ADD, [FLAGGED]).changed == []  # nothing left to change
    box.close()


def test_keyword_map_is_read_again_when_another_writer_replaces_the_file(tmp_path: Path) -> None:
    st = open_storage(tmp_path / "Maildir")
    box = st.select("INBOX")
    folder = box.folder
    assert folder.letters_for({"$Work"}) == "a"
    assert folder.load_keywords() == {0: "$Work"}
    kwfile.write(st.root / kwfile.KEYWORDS, {0: "$Work", 1: "$Home"})  # as Dovecot adds one
    assert folder.load_keywords() == {0: "$Work", 1: "$Home"}
    assert folder.letters_for({"$Home"}) == "b"
    box.close()


def test_new_is_not_listed_while_it_stays_empty_and_a_delivery_is_still_seen(storage, monkeypatch) -> None:
    box = storage.select("INBOX")
    past = time.time() - 60
    os.utime(storage.root / "new", (past, past))  # a directory time no change can hide behind
    calls = []
    real = Folder._has_new

    def counting(self: Folder) -> bool:
        calls.append(1)
        return real(self)

    monkeypatch.setattr(Folder, "_has_new", counting)
    box.refresh()
    listed = len(calls)
    assert listed == 1
    box.refresh()
    assert len(calls) == listed  # new/ at the same stamp, empty then: not listed again
    deliver(storage.root, COUNT)
    changes = box.refresh()
    assert len(changes.new_uids) == 1 and len(calls) > listed
    box.close()
