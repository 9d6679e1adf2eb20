"""``memory_reads``: a small FETCH runs on the event loop from the shared facts and the message caches
only, so inside it a read must either answer as the index would or refuse (``NotInMemory``), and the
scope must not open while another view's change is unheard of."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from dovetail.maildir.messagecache import HEADER_FIELDS, IMAP_DATA, MESSAGES, PART_TREES
from dovetail.storage import open_storage
from dovetail.storage.api import FLAGGED, NotInMemory, Section, StoreMode

MSG = (b"From: Alice <alice@example.org>\nTo: Bob <bob@example.org>\nSubject: hello %d\n"
       b"Content-Type: multipart/mixed; boundary=b\n\n--b\n\npart one %d\n--b--\n")


def deliver(root: Path, n: int) -> None:
    name = f"{1700000000 + n}.V801I{n:x}M{n}.mx.example"
    (root / "tmp" / name).write_bytes(MSG % (n, n))
    os.rename(root / "tmp" / name, root / "new" / name)


@pytest.fixture
def storage(tmp_path: Path):
    st = open_storage(tmp_path / "Maildir")
    for n in range(10):  # more than a FETCH reads through the index row by row: its IMAP data is cached
        deliver(st.root, n)
    return st


def _forget(mb, uid: int) -> None:
    key = mb._key(uid)
    for cache in (MESSAGES, HEADER_FIELDS, PART_TREES, IMAP_DATA):
        cache.forget(key)


SECTIONS = [Section((), None, ()), Section((), "HEADER", ()), Section((), "HEADER.FIELDS", ("Subject", "to")),
            Section((1,), None, ()), Section((), "TEXT", ())]


def test_memory_reads_answer_as_the_index_does(storage, clock) -> None:
    a = storage.select("INBOX")
    uids = list(a.uids)
    want = dict(envelope=True, bodystructure=True, raw=True, dates=True)
    expected = a.fetch_info(uids, **want)
    expected_sections = {(u, i): a.get_section(u, s) for u in uids for i, s in enumerate(SECTIONS)}
    expected_rows = a.flag_rows(uids[:2])
    a.refresh()  # the first reads parsed the messages and kept that in the index: a write of its own
    scope = a.memory_reads()
    assert scope is not None
    with scope as quiet:
        assert not quiet.flag_changes and not quiet.new_uids
        assert a.fetch_info(uids, **want) == expected
        assert a.fetch_info(uids[1:2], **want) == expected[1:2]
        assert {(u, i): a.get_section(u, s) for u in uids for i, s in enumerate(SECTIONS)} == expected_sections
        assert a.flag_rows(uids[:2]) == expected_rows
        with pytest.raises(NotInMemory):  # structures as data come from the index only
            a.fetch_info(uids, raw=False)
    assert a.memory_reads() is not None  # the scope closes: ordinary reads again


def test_a_cache_miss_refuses_instead_of_reading(storage, clock) -> None:
    a = storage.select("INBOX")
    uid = a.uids[0]
    full = a.get_section(uid, Section((1,), None, ()))
    a.refresh()
    _forget(a, uid)
    with a.memory_reads() or pytest.fail("not quiet"):
        for section in SECTIONS:
            with pytest.raises(NotInMemory):
                a.get_section(uid, section)
        with pytest.raises(NotInMemory):
            a.fetch_info([uid], envelope=True, raw=True)
    assert a.get_section(uid, Section((1,), None, ())) == full  # the ordinary read fills the caches again
    a.refresh()
    with a.memory_reads() or pytest.fail("not quiet"):
        assert a.get_section(uid, Section((1,), None, ())) == full


def test_no_memory_reads_while_another_views_change_is_unheard(storage, clock) -> None:
    a = storage.select("INBOX")
    b = storage.select("INBOX")
    uid = a.uids[2]
    b.store_flags([uid], StoreMode.ADD, [FLAGGED])
    assert a.memory_reads() is None
    a.refresh()  # the view hears of it; the folder's shared facts catch up when the scope opens
    with a.memory_reads() or pytest.fail("not quiet"):
        (info,) = a.fetch_info([uid], envelope=False, bodystructure=False)
        assert FLAGGED in info.flags
    deliver(storage.root, 19)
    assert a.memory_reads() is None


def test_a_busy_facts_lock_refuses(storage, clock) -> None:
    a = storage.select("INBOX")
    scope = a.memory_reads()
    assert scope is not None
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with a.folder.state.lock:
            held.set()
            release.wait(10)

    other = threading.Thread(target=hold)
    other.start()
    held.wait(10)
    try:
        with scope, pytest.raises(NotInMemory):
            a.flag_rows(list(a.uids))
    finally:
        release.set()
        other.join()


def test_a_fast_refresh_reads_the_index_and_leaves_the_disk_for_later(storage, monkeypatch) -> None:
    """``fast`` (after FETCH, STORE, SEARCH...): within FULL_SYNC_SECONDS of the last look, another
    view's STORE (in the index) is reported, a file another program put in ``new/`` is not, until a
    refresh without ``fast`` looks; the quiet check agrees with the refresh it stands for."""
    monkeypatch.setattr("dovetail.maildir.folder.FULL_SYNC_SECONDS", 3600.0)
    a = storage.select("INBOX")
    b = storage.select("INBOX")
    a.refresh()
    assert a.refresh_if_quiet(fast=True) is not None
    b.store_flags([a.uids[2]], StoreMode.ADD, [FLAGGED])
    deliver(storage.root, 10)
    assert a.refresh_if_quiet(fast=True) is None  # the index moved
    changes = a.refresh(fast=True)
    assert [st.uid for st in changes.flag_changes] == [a.uids[2]]
    assert not changes.new_uids and a.exists == 10
    assert a.refresh_if_quiet(fast=True) is not None  # the new file is left for a full look
    assert a.refresh_if_quiet() is None
    changes = a.refresh()
    assert len(changes.new_uids) == 1 and a.exists == 11
