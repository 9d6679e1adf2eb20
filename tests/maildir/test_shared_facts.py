"""The per-process copy of flags, sizes and dates (``Folder.with_facts``) follows the index by modseq:
flag changes, appends and expunges by any session show up in SEARCH facts and the first unseen."""

from __future__ import annotations

import os
from pathlib import Path

from dovetail.storage import open_storage
from dovetail.storage.api import DELETED, SEEN, StoreMode

MSG = b"From: a@example.org\nSubject: s\n\nbody\n"


def test_facts_follow_changes_of_other_sessions(tmp_path: Path) -> None:
    st = open_storage(tmp_path / "Maildir")
    for n in range(4):
        name = f"{1700000000 + n}.M{n}P1.host"
        (st.root / "tmp" / name).write_bytes(MSG)
        os.rename(st.root / "tmp" / name, st.root / "new" / name)
    a = st.select("INBOX")
    b = st.select("INBOX")
    try:
        uids = list(a.uids)
        assert a.folder.state is b.folder.state
        assert [f[0] for f in a.message_facts()] == uids
        assert a.first_unseen_seq() == 1
        b.store_flags(uids[:2], StoreMode.ADD, [SEEN])
        facts = {f[0]: f for f in a.message_facts()}
        assert SEEN in facts[uids[0]][1] and SEEN in facts[uids[1]][1] and SEEN not in facts[uids[2]][1]
        assert facts[uids[0]][4] > facts[uids[2]][4]  # the modseq moved with the flags
        assert a.first_unseen_seq() == 3
        new_uid = b.append(MSG, [SEEN])
        assert new_uid not in {f[0] for f in a.message_facts()}  # not in a's view until its refresh
        a.refresh()
        assert a.message_facts()[-1][0] == new_uid
        b.store_flags([uids[2]], StoreMode.ADD, [DELETED])
        assert b.expunge() == [uids[2]]
        # a was not told yet: the expunged message is still in its view, served from the history.
        facts = {f[0]: f for f in a.message_facts()}
        assert DELETED in facts[uids[2]][1]
        a.refresh()
        assert uids[2] not in {f[0] for f in a.message_facts()}
        assert a.first_unseen_seq() == 3  # uids[3], now third
    finally:
        a.close()
        b.close()


def test_facts_rebuilt_after_uidvalidity_change(tmp_path: Path) -> None:
    st = open_storage(tmp_path / "Maildir")
    a = st.select("INBOX")
    try:
        a.append(MSG, [SEEN])
        a.refresh()
        assert len(a.message_facts()) == 1
        state = a.folder.state
        old_uv = state.facts_uv
        (st.root / "dovecot-uidlist").unlink()
        a.folder.sync(force=True)
        a.folder.with_facts(lambda facts: None)
        assert state.facts_uv != old_uv and len(state.facts) == 1
    finally:
        a.close()
