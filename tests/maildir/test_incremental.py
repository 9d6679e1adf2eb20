"""Incremental sync and refresh: what one view learns about changes made by others, and the shared
inotify instance behind IDLE watchers."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from dovetail.maildir import watch
from dovetail.storage import open_storage
from dovetail.storage.api import DELETED, FLAGGED, SEEN, StoreMode

MSG = b"From: Alice <alice@example.org>\r\nTo: bob@example.com\r\nSubject: hello\r\n\r\nbody\r\n"


def deliver(root: Path, n: int) -> str:
    name = f"{1700000000 + n}.V801I{n:x}M{n}.mx.example"
    (root / "tmp" / name).write_bytes(MSG.replace(b"\r\n", b"\n"))
    os.rename(root / "tmp" / name, root / "new" / name)
    return name


@pytest.fixture
def storage(tmp_path: Path):
    st = open_storage(tmp_path / "Maildir")
    for n in range(5):
        deliver(st.root, n)
    return st


def test_other_views_changes_arrive_incrementally(storage) -> None:
    a = storage.select("INBOX")
    b = storage.select("INBOX")
    uids = list(a.uids)
    assert len(uids) == 5 and list(b.uids) == uids
    a.store_flags([uids[1]], StoreMode.ADD, [FLAGGED])
    changes = b.refresh()
    assert [(c.uid, FLAGGED in c.flags) for c in changes.flag_changes] == [(uids[1], True)]
    assert not b.refresh().flag_changes  # reported once
    assert not a.refresh().flag_changes  # a's own change is not echoed back to it
    a.store_flags([uids[2]], StoreMode.ADD, [DELETED])
    assert a.expunge() == [uids[2]]
    deliver(storage.root, 9)
    changes = b.refresh(allow_expunges=False)
    assert changes.expunged_uids == [] and len(changes.new_uids) == 1
    assert uids[2] in b.uids
    changes = b.refresh()
    assert changes.expunged_uids == [uids[2]] and changes.expunged_seqs == [3]
    assert uids[2] not in b.uids and len(b.uids) == 5
    a.close()
    b.close()


def test_rename_by_another_writer_is_picked_up(storage) -> None:
    box = storage.select("INBOX")
    uid = box.uids[0]
    cur = storage.root / "cur"
    name = sorted(os.listdir(cur))[0]
    base = name.partition(":")[0]
    os.rename(cur / name, cur / f"{base}:2,S")  # as Dovecot would, without touching our index
    changes = box.refresh()
    assert [(c.uid, SEEN in c.flags) for c in changes.flag_changes] == [(uid, True)]
    os.unlink(cur / f"{base}:2,S")
    assert box.refresh().expunged_uids == [uid]
    box.close()


def test_lost_expunge_history_falls_back_to_a_full_read(storage) -> None:
    a = storage.select("INBOX")
    b = storage.select("INBOX")
    first = a.uids[0]
    a.store_flags([first], StoreMode.ADD, [DELETED])
    a.expunge()
    idx = a.folder.index
    idx.begin()
    idx.db.execute("DELETE FROM expunged")
    idx.set_meta("expunge_floor", idx.get_int("highestmodseq"))
    idx.commit()
    assert b.refresh().expunged_uids == [first]
    a.close()
    b.close()


def test_watchers_share_one_inotify_instance(storage) -> None:
    if watch._libc is None:
        pytest.skip("no inotify")
    boxes = [storage.select("INBOX") for _ in range(3)]
    watchers = [b.watch() for b in boxes]

    async def main() -> list[bool]:
        # The first wait answers "maybe" (changes before the watch began are unknown).
        assert all(await asyncio.gather(*(w.wait_async(1.0) for w in watchers)))
        hubs = {w._hub for w in watchers}
        assert len(hubs) == 1
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, deliver, storage.root, 20)
        start = loop.time()
        woke = await asyncio.gather(*(w.wait_async(3.0) for w in watchers))
        assert loop.time() - start < 1.0
        quiet = await asyncio.gather(*(w.wait_async(0.1) for w in watchers))
        for w in watchers:
            w.close()
        assert hubs.pop().fd == -1  # the last watcher closed the instance
        return [*woke, *(not q for q in quiet)]

    assert all(asyncio.run(main()))
    for b in boxes:
        b.close()


def test_cached_headers_match_the_header_section(storage) -> None:
    long = b"From: x@example.org\r\nX-Long: " + b"a" * 70000 + b"\r\nSubject: big\r\n\r\nbody\r\n"
    storage.append("INBOX", long)
    box = storage.select("INBOX")
    cached = box.cached_headers(box.uids)
    assert len(cached) == 5  # the 64 KB+ header is left to the file
    for uid in box.uids:
        if uid in cached:
            assert cached[uid] == box.get_section(uid, "HEADER")
    box.close()
