"""A FETCH of a few messages in the storage thread answers from the folder's shared facts at the modseq
its view last took in (as Dovecot answers from its view): no index statement, another session's newer
change told by the refresh after it, and the session's own STORE never hidden behind older facts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dovetail.storage import open_storage
from dovetail.storage.api import FLAGGED, SEEN, StoreMode

MSG = b"From: a@example.org\nTo: b@example.org\nSubject: s %d\n\nbody %d\n"


@pytest.fixture
def storage(tmp_path: Path):
    st = open_storage(tmp_path / "Maildir")
    for n in range(12):
        name = f"{1700000000 + n}.V801I{n:x}M{n}.mx.example"
        (st.root / "tmp" / name).write_bytes(MSG % (n, n))
        os.rename(st.root / "tmp" / name, st.root / "new" / name)
    return st


def _statements(mb) -> list[str]:
    seen: list[str] = []
    mb.folder.index.db.conn.set_trace_callback(seen.append)
    return seen


def test_a_few_messages_are_read_without_a_statement(storage) -> None:
    a = storage.select("INBOX")
    uids = list(a.uids)[:3]
    a.refresh()
    expected = a.fetch_info(uids, envelope=False, bodystructure=False, raw=True, dates=False)
    rows = a.flag_rows(uids)
    seen = _statements(a)
    assert a.fetch_info(uids, envelope=False, bodystructure=False, raw=True, dates=False) == expected
    assert a.flag_rows(uids) == rows
    assert seen == []


def test_another_sessions_change_is_told_by_the_refresh_after_the_read(storage) -> None:
    a, b = storage.select("INBOX"), storage.select("INBOX")
    uid = a.uids[4]
    a.refresh()
    b.store_flags([uid], StoreMode.ADD, [FLAGGED])
    (info,) = a.fetch_info([uid], envelope=False, bodystructure=False, raw=True, dates=False)
    assert FLAGGED not in info.flags  # as this view knows the message, until its refresh
    changes = a.refresh()
    assert [(c.uid, FLAGGED in c.flags) for c in changes.flag_changes] == [(uid, True)]
    (info,) = a.fetch_info([uid], envelope=False, bodystructure=False, raw=True, dates=False)
    assert FLAGGED in info.flags


def test_the_sessions_own_store_shows_though_another_change_is_unheard(storage) -> None:
    a, b = storage.select("INBOX"), storage.select("INBOX")
    first, second = a.uids[1], a.uids[2]
    a.refresh()
    b.store_flags([first], StoreMode.ADD, [FLAGGED])  # the view has not heard of this one yet
    a.store_flags([second], StoreMode.ADD, [SEEN])  # so this STORE leaves the view behind the index
    (info,) = a.fetch_info([second], envelope=False, bodystructure=False, raw=True, dates=False)
    assert SEEN in info.flags
    ((uid, flags, _recent, _modseq, _size),) = a.flag_rows([second])
    assert uid == second and SEEN in flags
