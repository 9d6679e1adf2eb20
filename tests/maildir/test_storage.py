"""MaildirStorage and MaildirMailbox on real directories."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dovetail.maildir import uidlist
from dovetail.maildir.index import INDEX_FILE
from dovetail.maildir.mailbox import InvalidFlag
from dovetail.maildir.watch import watch_folder
from dovetail.storage import open_storage
from dovetail.storage.api import (
    DELETED,
    FLAGGED,
    SEEN,
    InvalidMailboxName,
    MailboxExists,
    MailboxNotAllowed,
    MailboxNotFound,
    MessageExpunged,
    ReadOnlyMailbox,
    StoreMode,
)

MSG = b"From: Alice <alice@example.org>\r\nTo: bob@example.com\r\nSubject: hello\r\n\r\nline one\r\nline two\r\n"


def deliver(root: Path, body: bytes = MSG, n: int = 0) -> str:
    """Write a message into new/ the way Postfix's virtual(8) does (LF endings, no size in the name)."""
    lf = body.replace(b"\r\n", b"\n")
    name = f"{1700000000 + n}.V801I{n:x}M{n}.mx.example"
    tmp = root / "tmp" / name
    tmp.write_bytes(lf)
    os.rename(tmp, root / "new" / name)
    return name


@pytest.fixture
def storage(tmp_path: Path):
    return open_storage(tmp_path / "Maildir")


def test_create_list_rename_delete(storage) -> None:
    storage.create("Work/Projects")
    storage.create("Ünïcode")
    assert (storage.root / ".Work.Projects" / "cur").is_dir()
    assert (storage.root / ".&ANw-n&AO8-code" / "maildirfolder").exists()
    listed = {m.name: m.attributes for m in storage.list_mailboxes()}
    assert "\\Noselect" in listed["Work"] and "\\HasChildren" in listed["Work"]
    assert "\\HasNoChildren" in listed["Work/Projects"]
    assert [m.name for m in storage.list_mailboxes("", "%")] == ["INBOX", "Work", "Ünïcode"]
    with pytest.raises(MailboxExists):
        storage.create("Work/Projects")
    with pytest.raises(MailboxExists):
        storage.create("inbox")
    storage.create("Work")
    storage.subscribe("Work/Projects")
    storage.rename("Work", "Job")
    names = [m.name for m in storage.list_mailboxes()]
    assert "Job/Projects" in names and "Work/Projects" not in names
    assert storage.list_subscribed() == ["Job/Projects"]
    with pytest.raises(MailboxNotAllowed):
        storage.delete("Job")
    storage.delete("Job/Projects")
    storage.delete("Job")
    with pytest.raises(MailboxNotFound):
        storage.delete("Job")
    with pytest.raises(MailboxNotAllowed):
        storage.delete("INBOX")


@pytest.mark.parametrize("bad", ["../etc", "a/../../b", "/etc/passwd", "a\x00b", "a\nb", "x/" * 20 + "y", "a.b"])
def test_bad_names_change_nothing(storage, bad: str) -> None:
    before = sorted(os.listdir(storage.root))
    for op in (storage.create, storage.delete, storage.select, storage.subscribe):
        with pytest.raises(InvalidMailboxName):
            op(bad)
    with pytest.raises(InvalidMailboxName):
        storage.rename("INBOX", bad)
    assert sorted(os.listdir(storage.root)) == before
    assert not (storage.root.parent / "etc").exists()


def test_special_use(storage) -> None:
    storage.ensure_special_use()
    listed = {m.name: m for m in storage.list_mailboxes()}
    for name, attr in [("Sent", "\\Sent"), ("Drafts", "\\Drafts"), ("Trash", "\\Trash"), ("Junk", "\\Junk"),
                       ("Archive", "\\Archive")]:
        assert listed[name].special_use == attr and attr in listed[name].attributes
        assert "\\Subscribed" in listed[name].attributes
    storage.create("Outbox", special_use="\\Sent")
    assert storage.special_use("Outbox") == "\\Sent"
    storage.ensure_special_use()  # idempotent
    assert len([m for m in storage.list_mailboxes() if m.name == "Sent"]) == 1


def test_status_unseen_counts_only_the_seen_flag(storage) -> None:
    """UNSEEN is counted by SQLite over the flags column: a keyword spelled like the flag is no \\Seen."""
    storage.append("INBOX", MSG, [SEEN])
    storage.append("INBOX", MSG, [SEEN, FLAGGED, "Work"])
    storage.append("INBOX", MSG, ["Seen", "NotSeen"])
    storage.append("INBOX", MSG, [])
    assert storage.status("INBOX", ["MESSAGES", "UNSEEN"]) == {"MESSAGES": 4, "UNSEEN": 2}


def test_postfix_virtual_layout_is_served(storage) -> None:
    for i in range(3):
        deliver(storage.root, MSG.replace(b"hello", b"hello %d" % i), i)
    assert not (storage.root / uidlist.UIDLIST).exists()
    assert storage.status("INBOX", ["MESSAGES", "UNSEEN", "RECENT"]) == {"MESSAGES": 3, "UNSEEN": 3, "RECENT": 3}
    box = storage.select("INBOX")
    assert list(box.uids) == [1, 2, 3] and box.recent_count == 3
    assert os.listdir(storage.root / "new") == []
    assert sorted(os.listdir(storage.root / "cur"))[0].endswith(":2,")
    infos = box.fetch_info([1, 2, 3])
    assert [i.envelope[1] for i in infos] == ["hello 0", "hello 1", "hello 2"]
    assert infos[0].size == len(MSG) + 2  # RFC822.SIZE counts CRLF ("hello 0" is 2 longer)
    assert box.open_message(1) == MSG.replace(b"hello", b"hello 0")
    assert box.get_section(2, "HEADER.FIELDS (Subject)") == b"Subject: hello 1\r\n\r\n"
    assert box.get_section(2, "TEXT", (5, 3)) == b"one"
    ul = uidlist.read(storage.root / uidlist.UIDLIST)
    assert ul.nextuid == 4 and len(ul.entries) == 3
    # another session does not get \Recent again
    other = storage.select("INBOX")
    assert other.recent_count == 0


def test_flags_keywords_and_condstore(storage) -> None:
    deliver(storage.root)
    box = storage.select("INBOX")
    m0 = box.highestmodseq
    res = box.store_flags([1], StoreMode.ADD, [SEEN, "$Forwarded", "Work"])
    assert res.changed[0].flags == {SEEN, "$Forwarded", "Work"} and res.changed[0].modseq > m0
    name = os.listdir(storage.root / "cur")[0]
    assert name.endswith(":2,Sab")
    assert (storage.root / "dovecot-keywords").read_text() == "0 $Forwarded\n1 Work\n"
    mod = res.changed[0].modseq
    stale = box.store_flags([1], StoreMode.REMOVE, ["Work"], unchangedsince=mod - 1)
    assert stale.modified == [1] and stale.changed == []
    res = box.store_flags([1], StoreMode.REPLACE, [FLAGGED], unchangedsince=mod)
    assert res.changed[0].flags == {FLAGGED}
    assert os.listdir(storage.root / "cur")[0].endswith(":2,F")
    assert box.changed_since(mod) == [1]
    with pytest.raises(InvalidFlag):
        box.store_flags([1], StoreMode.ADD, ["bad keyword"])
    with pytest.raises(InvalidFlag):
        box.store_flags([1], StoreMode.ADD, ["\\Bogus"])
    assert box.refresh().flag_changes == []  # own changes are not reported back


def test_two_sessions_see_each_other(storage) -> None:
    a = storage.select("INBOX")
    b = storage.select("INBOX")
    uid = a.append(MSG, [SEEN], datetime(2020, 5, 17, 12, 0, tzinfo=UTC))
    ch = b.refresh()
    assert ch.new_uids == [uid]
    info = b.fetch_info([uid])[0]
    assert info.internal_date == datetime(2020, 5, 17, 12, 0, tzinfo=UTC) and info.flags == {SEEN}
    a.refresh()
    a.store_flags([uid], StoreMode.ADD, [DELETED])
    ch = b.refresh()
    assert [f.uid for f in ch.flag_changes] == [uid] and DELETED in ch.flag_changes[0].flags
    assert a.expunge() == [uid]
    ch = b.refresh(allow_expunges=False)
    assert ch.expunged_uids == [] and list(b.uids) == [uid]
    with pytest.raises(MessageExpunged):
        b.open_message(uid)
    ch = b.refresh()
    assert ch.expunged_uids == [uid] and ch.expunged_seqs == [1] and list(b.uids) == []
    assert a.expunged_since(0) == [uid]


def test_expunge_sequence_numbers_descend(storage) -> None:
    box = storage.select("INBOX")
    uids = [box.append(MSG) for _ in range(5)]
    box.refresh()
    box.store_flags([uids[1], uids[3]], StoreMode.ADD, [DELETED])
    assert box.expunge() == [uids[1], uids[3]]
    ch = box.refresh()
    assert ch.expunged_seqs == [4, 2]
    assert list(box.uids) == [uids[0], uids[2], uids[4]]


def test_copy_and_move(storage) -> None:
    storage.create("Archive")
    box = storage.select("INBOX")
    u1 = box.append(MSG, [SEEN, "Work"])
    u2 = box.append(MSG)
    box.refresh()
    res = box.copy([u1, u2], "Archive")
    assert list(res.uid_map) == [u1, u2] and sorted(res.uid_map.values()) == [1, 2]
    arch = storage.select("Archive")
    assert res.uidvalidity == arch.uidvalidity
    assert arch.fetch_info([1])[0].flags == {SEEN, "Work"}
    moved = box.move([u2], "Archive")
    assert moved.uid_map == {u2: 3}
    assert box.refresh().expunged_uids == [u2]
    with pytest.raises(MailboxNotFound):
        box.copy([u1], "Nowhere")


def test_readonly_examine(storage) -> None:
    deliver(storage.root)
    box = storage.select("INBOX", readonly=True)
    assert os.listdir(storage.root / "new") != []  # EXAMINE does not move new/ to cur/
    with pytest.raises(ReadOnlyMailbox):
        box.store_flags(box.uids, StoreMode.ADD, [SEEN])
    with pytest.raises(ReadOnlyMailbox):
        box.expunge()


def test_rename_inbox_moves_messages(storage) -> None:
    storage.append("INBOX", MSG)
    storage.rename("INBOX", "Old")
    assert storage.status("INBOX", ["MESSAGES"])["MESSAGES"] == 0
    assert storage.status("Old", ["MESSAGES"])["MESSAGES"] == 1


def test_status_items(storage) -> None:
    storage.append("INBOX", MSG, [SEEN])
    storage.append("INBOX", MSG)
    st = storage.status("INBOX", ["MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "RECENT", "HIGHESTMODSEQ",
                                  "SIZE"])
    assert st["MESSAGES"] == 2 and st["UIDNEXT"] == 3 and st["UNSEEN"] == 1 and st["RECENT"] == 2
    assert st["SIZE"] == 2 * len(MSG) and st["UIDVALIDITY"] > 0 and st["HIGHESTMODSEQ"] > 1
    with pytest.raises(ValueError):
        storage.status("INBOX", ["BOGUS"])
    with pytest.raises(MailboxNotFound):
        storage.status("Nope", ["MESSAGES"])


def test_index_is_a_cache(storage) -> None:
    deliver(storage.root)
    box = storage.select("INBOX")
    box.store_flags([1], StoreMode.ADD, [FLAGGED, "Work"])
    validity = box.uidvalidity
    box.close()
    for suffix in ("", "-wal", "-shm"):
        Path(str(storage.root / INDEX_FILE) + suffix).unlink(missing_ok=True)
    again = storage.select("INBOX")
    assert again.uidvalidity == validity and list(again.uids) == [1]
    assert again.fetch_info([1])[0].flags == {FLAGGED, "Work"}


def test_warm_fetch_reads_no_message_files(storage) -> None:
    for i in range(50):
        deliver(storage.root, MSG.replace(b"hello", b"msg %d" % i), i)
    first = storage.select("INBOX")
    first.fetch_info(first.uids)  # parsed on first need, and kept in the index
    first.close()
    # scribble over every message body (same names): a warm open must still answer from the index
    for name in os.listdir(storage.root / "cur"):
        (storage.root / "cur" / name).write_bytes(b"garbage\n")
    box = storage.select("INBOX")
    subjects = [i.envelope[1] for i in box.fetch_info(box.uids)]
    assert subjects == [f"msg {i}" for i in range(50)]


def test_uidvalidity_change_is_reported(storage) -> None:
    deliver(storage.root)
    box = storage.select("INBOX")
    ul = uidlist.read(storage.root / uidlist.UIDLIST)
    ul.uidvalidity += 1000
    uidlist.write(storage.root / uidlist.UIDLIST, ul)
    assert box.refresh().uidvalidity_changed


def test_watch_sees_delivery_within_a_second(storage) -> None:
    box = storage.select("INBOX")
    for polling in (False, True):
        watcher = watch_folder(box.folder.path, polling=polling)
        timer = threading.Timer(0.05, deliver, args=(storage.root, MSG, 7 + polling))
        start = time.monotonic()
        timer.start()
        assert watcher.wait(3.0)
        assert time.monotonic() - start < 1.0
        timer.join()
        watcher.close()
        assert box.refresh().new_uids


def test_watch_async(storage) -> None:
    box = storage.select("INBOX")
    watcher = box.watch()

    async def main() -> bool:
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, deliver, storage.root, MSG, 3)
        return await watcher.wait_async(3.0)

    assert asyncio.run(main())
    assert not watcher.wait(0.05) or box.refresh()
    watcher.close()


def test_recreated_mailbox_gets_a_new_uidvalidity(storage) -> None:
    storage.create("Temp")
    first = storage.status("Temp", ["UIDVALIDITY"])["UIDVALIDITY"]
    storage.delete("Temp")
    storage.create("Temp")
    assert storage.status("Temp", ["UIDVALIDITY"])["UIDVALIDITY"] > first


def test_corrupt_index_and_uidlist_are_survived(storage) -> None:
    deliver(storage.root)
    box = storage.select("INBOX")
    validity = box.uidvalidity
    box.close()
    (storage.root / INDEX_FILE).write_bytes(b"this is not a database" * 100)
    for suffix in ("-wal", "-shm"):
        Path(str(storage.root / INDEX_FILE) + suffix).unlink(missing_ok=True)
    box = storage.select("INBOX")
    assert list(box.uids) == [1] and box.uidvalidity == validity
    box.close()
    (storage.root / uidlist.UIDLIST).write_text("garbage\n")
    box = storage.select("INBOX")
    assert list(box.uids) == [1] and box.uidvalidity != validity
    assert uidlist.read(storage.root / uidlist.UIDLIST).uidvalidity == box.uidvalidity


def test_append_limits_and_bad_flags_change_nothing(tmp_path: Path) -> None:
    from dovetail.maildir.storage import MaildirStorage
    from dovetail.storage.api import InvalidFlag, MessageTooLarge

    storage = MaildirStorage(tmp_path / "M", max_message_bytes=100)
    with pytest.raises(MessageTooLarge):
        storage.append("INBOX", b"x" * 101)
    with pytest.raises(InvalidFlag):
        storage.append("INBOX", MSG[:90], ["\\Recent", "bad(keyword"])
    with pytest.raises(MailboxNotFound):
        storage.append("Nope", MSG[:90])
    assert os.listdir(storage.root / "cur") == [] and os.listdir(storage.root / "tmp") == []


def _append_many(root: str, tag: str, n: int, out) -> None:
    storage = open_storage(root)
    out.put([storage.append("INBOX", MSG.replace(b"hello", f"{tag} {i}".encode())).uid_map[0] for i in range(n)])


def test_concurrent_processes_get_distinct_uids(storage) -> None:
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_append_many, args=(str(storage.root), f"p{k}", 20, out)) for k in range(3)]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    uids = sorted(u for r in results for u in r)
    assert uids == list(range(1, 61))
    box = storage.select("INBOX")
    assert list(box.uids) == uids
    assert len({i.envelope[1] for i in box.fetch_info(uids)}) == 60


def test_expunge_history_is_bounded(storage, monkeypatch) -> None:
    from dovetail.maildir import index

    monkeypatch.setattr(index, "EXPUNGE_HISTORY", 3)
    box = storage.select("INBOX")
    uids = [box.append(MSG) for _ in range(6)]
    box.refresh()
    start = box.highestmodseq
    for uid in uids:
        box.store_flags([uid], StoreMode.ADD, [DELETED])
        box.expunge([uid])
    assert box.expunged_since(box.highestmodseq - 1) == [uids[-1]]
    assert box.expunged_since(start) is None  # history no longer reaches back that far


def test_file_modes_follow_the_folder_and_tmp_is_cleaned(storage, monkeypatch) -> None:  # noqa: ANN001
    from dovetail.maildir import folder

    # A file's change time cannot be set back, so the limit is moved instead: entries older than an
    # hour from now count as stale (both files below), unless used since (the one still being written).
    monkeypatch.setattr(folder, "TMP_MAX_AGE", -3600)
    os.chmod(storage.root, 0o750)
    storage.append("INBOX", MSG)
    (name,) = os.listdir(storage.root / "cur")
    assert os.stat(storage.root / "cur" / name).st_mode & 0o777 == 0o640
    stale = storage.root / "tmp" / "1.M1P1.dead"
    fresh = storage.root / "tmp" / "2.M2P2.writing"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"y")
    old = time.time() - 40 * 3600
    os.utime(stale, (old, old))
    in_use = time.time() + 2 * 3600
    os.utime(fresh, (in_use, in_use))
    storage.select("INBOX").close()
    assert not stale.exists() and fresh.exists()


def test_concurrent_flag_changes_from_many_sessions_are_all_kept(tmp_path) -> None:  # noqa: ANN001
    """Each session sets \\Deleted on its own message at the same time: no update is lost."""
    import threading

    from dovetail.storage import open_storage
    from dovetail.storage.api import StoreMode

    root = tmp_path / "box"
    storage = open_storage(root)
    for i in range(20):
        storage.append("INBOX", f"Subject: m{i}\r\n\r\nx\r\n".encode(), [], None)
    uids = storage.select("INBOX").uids
    barrier = threading.Barrier(len(uids))
    errors: list[BaseException] = []

    def session(uid: int) -> None:
        try:
            box = open_storage(root).select("INBOX")
            barrier.wait()
            box.store_flags([uid], StoreMode.ADD, ["\\Deleted"])
            box.refresh()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    done = threading.Event()

    def reader() -> None:  # other sessions keep syncing the index from the directory meanwhile
        box = open_storage(root).select("INBOX")
        while not done.is_set():
            box.refresh()

    readers = [threading.Thread(target=reader) for _ in range(3)]
    for t in readers:
        t.start()
    threads = [threading.Thread(target=session, args=(u,)) for u in uids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    done.set()
    for t in readers:
        t.join(60)
    assert not errors
    box = open_storage(root).select("INBOX")
    infos = box.fetch_info(box.uids)
    assert all("\\Deleted" in info.flags for info in infos)
    assert len(box.expunge()) == 20
