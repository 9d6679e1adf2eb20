"""STORE's per-message work (maildir/flagstore.py) and the view it leaves: file names that Dovecot reads
as the new flags, keywords given letters first, and a refresh after the STORE that still reports every
other session's change while it does not read its own back."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dovetail.maildir import keywords as kwfile
from dovetail.maildir.flagstore import FlagPlan
from dovetail.storage import open_storage
from dovetail.storage.api import ANSWERED, DELETED, FLAGGED, SEEN, StoreMode

MSG = b"From: a@example.org\nTo: b@example.com\nSubject: s %d\n\nbody %d\n"
COUNT = 6


@pytest.fixture
def storage(tmp_path: Path):
    st = open_storage(tmp_path / "Maildir")
    for n in range(COUNT):
        name = f"{1700000000 + n}.M{n}P1.mx.example"
        (st.root / "tmp" / name).write_bytes(MSG % (n, n))
        os.rename(st.root / "tmp" / name, st.root / "new" / name)
    return st


def info_of(root: Path) -> dict[str, str]:
    return {n.split(":2,")[0]: n.split(":2,")[1] for n in os.listdir(root / "cur")}


def test_plan_works_out_each_old_flag_set_once_and_asks_the_folder_only_for_unknown_keywords() -> None:
    asked: list[set[str]] = []

    def info_for(flags: set[str]) -> str:
        asked.append(flags)
        return "Sz"

    plan = FlagPlan(StoreMode.ADD, {SEEN, "$Work"}, {0: "$Work", 2: "$Home"}, info_for)
    first = plan.outcome("\\Flagged $Home")
    assert first is not None
    info, column, flags, keywords = first
    assert info == "FSac" and column == "$Home $Work \\Flagged \\Seen"
    assert flags == {FLAGGED, SEEN, "$Home", "$Work"} and keywords == {"$Home", "$Work"}
    assert plan.outcome("\\Flagged $Home") is first
    assert plan.outcome("$Work \\Seen") is None  # nothing to change
    assert asked == []
    assert FlagPlan(StoreMode.REMOVE, {"$Work"}, {0: "$Work"}, info_for).outcome("$Work \\Deleted")[0] == "T"
    assert FlagPlan(StoreMode.REPLACE, {"$New"}, {0: "$Work"}, info_for).outcome("\\Seen")[0] == "Sz"
    assert asked == [{"$New"}]


def test_store_renames_for_dovecot_and_reports_the_new_state(storage) -> None:
    box = storage.select("INBOX")
    uids = list(box.uids)
    res = box.store_flags(uids[:3], StoreMode.ADD, [ANSWERED, "$Label1"])
    assert [st.uid for st in res.changed] == uids[:3]
    assert all(st.flags == {ANSWERED, "$Label1"} and st.keywords == {"$Label1"} for st in res.changed)
    assert kwfile.read(storage.root / kwfile.KEYWORDS) == {0: "$Label1"}
    infos = sorted(info_of(storage.root).values())
    assert infos == ["", "", "", "Ra", "Ra", "Ra"]
    res = box.store_flags(uids, StoreMode.REPLACE, [DELETED])
    assert len(res.changed) == COUNT and sorted(info_of(storage.root).values()) == ["T"] * COUNT
    box.close()


def test_refresh_after_a_store_reports_other_sessions_changes_and_not_its_own(storage) -> None:
    a = storage.select("INBOX")
    b = storage.select("INBOX")
    uids = list(a.uids)
    # Nothing else happened since a's last refresh: its own change is not read back.
    a.store_flags(uids[:2], StoreMode.ADD, [SEEN])
    assert a.refresh().flag_changes == []
    assert [st.uid for st in b.refresh().flag_changes] == uids[:2]
    # b changed a message before a's STORE: a's refresh reports it, and only it.
    b.store_flags([uids[4]], StoreMode.ADD, [FLAGGED])
    a.store_flags([uids[3]], StoreMode.ADD, [FLAGGED])
    assert [(st.uid, st.flags) for st in a.refresh().flag_changes] == [(uids[4], frozenset({FLAGGED}))]
    # b's change after a's STORE is reported too, and a's own modseqs serve CONDSTORE.
    a.store_flags([uids[5]], StoreMode.ADD, [FLAGGED])
    b.store_flags([uids[0]], StoreMode.REMOVE, [SEEN])
    assert [st.uid for st in a.refresh().flag_changes] == [uids[0]]
    assert a.changed_since(a.highestmodseq - 3) == [uids[0], uids[3], uids[5]]
    a.close()
    b.close()


@pytest.mark.parametrize("unchangedsince", [None, "known"])
def test_a_file_another_program_renamed_keeps_its_flags_through_a_store(storage, monkeypatch, unchangedsince) -> None:
    """Within the fast sync's interval the STORE starts from the index's names; a file Dovecot renamed
    meanwhile (\\Seen set) is not at its name: the files already renamed are renamed back, and the STORE
    is made again after a sync. The message keeps \\Seen, the others are changed once (each reported),
    and UNCHANGEDSINCE compares with the modseqs the client knew: the message Dovecot changed since is
    reported modified and left alone."""
    monkeypatch.setattr("dovetail.maildir.folder.FULL_SYNC_SECONDS", 3600.0)
    box = storage.select("INBOX")
    box.refresh()
    uids = list(box.uids)
    top = box.highestmodseq if unchangedsince else None
    cur = storage.root / "cur"
    third = sorted(os.listdir(cur))[3]
    base = third.partition(":2,")[0]
    os.rename(cur / third, cur / (base + ":2,S"))  # as Dovecot sets \Seen
    result = box.store_flags(uids, StoreMode.ADD, [FLAGGED], unchangedsince=top)
    infos = info_of(storage.root)
    if unchangedsince:
        assert result.modified == [uids[3]]
        assert infos[base] == "S" and sorted(v for k, v in infos.items() if k != base) == ["F"] * (COUNT - 1)
        assert [st.uid for st in result.changed] == uids[:3] + uids[4:]
    else:
        assert result.modified == []
        assert infos[base] == "FS" and sorted(v for k, v in infos.items() if k != base) == ["F"] * (COUNT - 1)
        assert [st.uid for st in result.changed] == uids
    box.refresh()
    flags = {i.uid: i.flags for i in box.fetch_info(uids, envelope=False, bodystructure=False)}
    assert SEEN in flags[uids[3]] and sum(SEEN in f for f in flags.values()) == 1
    assert sum(FLAGGED in f for f in flags.values()) == (COUNT - 1 if unchangedsince else COUNT)
    box.close()
