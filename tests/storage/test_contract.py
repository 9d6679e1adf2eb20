"""The storage API's contract, held against every implementation: the Maildir++ storage and the
in-memory one the IMAP tests use. A behaviour the IMAP server or delivery relies on belongs here,
so the two cannot drift apart."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dovetail.storage import open_storage
from dovetail.storage.api import (
    DELETED,
    FLAGGED,
    SEEN,
    DeliveryId,
    ErrorKind,
    InvalidFlag,
    InvalidMailboxName,
    MailboxExists,
    MailboxNotAllowed,
    MailboxNotFound,
    MailStorage,
    MessageExpunged,
    OverQuota,
    ReadOnlyMailbox,
    StoreMode,
    Usage,
)
from tests.imap.memstore import MemStorage

MSG = b"From: alice@example.org\r\nTo: bob@example.com\r\nSubject: hello\r\n\r\nline one\r\nline two\r\n"


def msg(n: int) -> bytes:
    return MSG.replace(b"hello", b"hello %d" % n)


@pytest.fixture(params=["maildir", "memory"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MailStorage]:
    yield open_storage(tmp_path / "Maildir") if request.param == "maildir" else MemStorage()


def names(storage: MailStorage) -> dict[str, frozenset[str]]:
    return {m.name: m.attributes for m in storage.list_mailboxes()}


# --- create / list / rename / delete -------------------------------------------------------------


def test_create_and_list(storage: MailStorage) -> None:
    storage.create("Work/Projects")
    listed = names(storage)
    assert next(iter(listed)) == "INBOX"
    assert "\\Noselect" in listed["Work"] and "\\HasChildren" in listed["Work"]
    assert "\\HasNoChildren" in listed["Work/Projects"]
    assert storage.exists("Work/Projects") and storage.exists("inbox") and not storage.exists("Work")
    with pytest.raises(MailboxExists):
        storage.create("Work/Projects")
    with pytest.raises(MailboxExists):
        storage.create("INBOX")
    for bad in ("", "a//b", "../up", "a/.hidden"):
        with pytest.raises(InvalidMailboxName):
            storage.create(bad)


def test_rename_takes_children_along(storage: MailStorage) -> None:
    storage.create("A")
    storage.create("A/B")
    storage.create("Other")
    storage.append("A/B", msg(1))
    with pytest.raises(MailboxExists):
        storage.rename("A", "Other")
    with pytest.raises(MailboxNotFound):
        storage.rename("Nope", "Z")
    with pytest.raises(MailboxNotAllowed):
        storage.rename("A", "A/B/C")
    storage.rename("A", "C")
    listed = names(storage)
    assert "C" in listed and "C/B" in listed and "A" not in listed and "A/B" not in listed
    assert storage.status("C/B", ["MESSAGES"]) == {"MESSAGES": 1}


def test_rename_inbox_moves_its_messages_and_keeps_it(storage: MailStorage) -> None:
    storage.append("INBOX", msg(1))
    storage.append("INBOX", msg(2))
    storage.rename("INBOX", "Old")
    assert storage.status("Old", ["MESSAGES"]) == {"MESSAGES": 2}
    assert storage.status("INBOX", ["MESSAGES"]) == {"MESSAGES": 0}


def test_delete(storage: MailStorage) -> None:
    storage.create("P/C")
    with pytest.raises(MailboxNotAllowed):
        storage.delete("INBOX")
    with pytest.raises(MailboxNotFound):
        storage.delete("Missing")
    storage.create("P")
    with pytest.raises(MailboxNotAllowed):
        storage.delete("P")  # has a child
    storage.delete("P/C")
    storage.delete("P")
    assert set(names(storage)) == {"INBOX"}


def test_subscriptions(storage: MailStorage) -> None:
    storage.create("News")
    storage.subscribe("News")
    assert "News" in storage.list_subscribed()
    assert "\\Subscribed" in names(storage)["News"]
    storage.unsubscribe("News")
    assert "News" not in storage.list_subscribed()


# --- append / select / fetch ---------------------------------------------------------------------


def test_append_select_fetch(storage: MailStorage) -> None:
    when = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    res = storage.append("INBOX", MSG, [SEEN], when)
    status = storage.status("INBOX", ["MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "SIZE"])
    (uid,) = res.uid_map.values()
    assert res.uidvalidity == status["UIDVALIDITY"] and uid > 0
    assert status["MESSAGES"] == 1 and status["UIDNEXT"] > uid and status["UNSEEN"] == 0
    assert status["SIZE"] == len(MSG)
    with storage.select("INBOX") as box:
        assert list(box.uids) == [uid] and box.exists == 1 and box.seq_of(uid) == 1
        (info,) = box.fetch_info([uid])
        assert info.size == len(MSG) and info.flags == {SEEN}
        assert info.internal_date.timestamp() == when.timestamp()
        assert box.open_message(uid) == MSG
        assert box.get_section(uid, "HEADER").startswith(b"From: alice@example.org\r\n")
        assert box.get_section(uid, "HEADER").endswith(b"\r\n\r\n")
        assert box.get_section(uid, "TEXT") == b"line one\r\nline two\r\n"
        assert box.fetch_info([uid + 100]) == []
    with pytest.raises(MailboxNotFound):
        storage.append("Nowhere", MSG)
    with pytest.raises(MailboxNotFound):
        storage.select("Nowhere")


def test_views_change_only_on_refresh(storage: MailStorage) -> None:
    storage.append("INBOX", msg(1))
    with storage.select("INBOX") as box:
        assert box.recent_count == 1
        new = storage.append("INBOX", msg(2)).uid_map[0]
        assert box.exists == 1
        changes = box.refresh()
        assert changes.new_uids == [new] and box.exists == 2
        assert not box.refresh()
    with storage.select("INBOX") as again:
        assert again.recent_count == 0  # the first view took \Recent


def test_examine_shows_recent_without_taking_it(storage: MailStorage) -> None:
    storage.append("INBOX", msg(1))
    with storage.select("INBOX", readonly=True) as box:
        assert box.recent_count == 1
        storage.append("INBOX", msg(2))
        box.refresh()
        assert box.recent_count == 2
    with storage.select("INBOX") as box:
        assert box.recent_count == 2  # EXAMINE left \Recent for the next SELECT
    with storage.select("INBOX", readonly=True) as box:
        assert box.recent_count == 0


def test_uidvalidity_and_uidnext(storage: MailStorage) -> None:
    storage.create("Box")
    first = storage.status("Box", ["UIDVALIDITY", "UIDNEXT"])
    uids = [storage.append("Box", msg(i)).uid_map[0] for i in range(3)]
    assert uids == sorted(uids) and len(set(uids)) == 3
    assert storage.status("Box", ["UIDNEXT"])["UIDNEXT"] > uids[-1]
    with storage.select("Box") as box:
        assert box.uidvalidity == first["UIDVALIDITY"] and box.uidnext > uids[-1]
    storage.delete("Box")
    storage.create("Box")
    assert storage.status("Box", ["UIDVALIDITY"])["UIDVALIDITY"] != first["UIDVALIDITY"]


# --- flags and keywords ----------------------------------------------------------------------------


def test_flags_and_keywords(storage: MailStorage) -> None:
    uid = storage.append("INBOX", MSG).uid_map[0]
    with storage.select("INBOX") as box:
        before = box.highestmodseq
        res = box.store_flags([uid], StoreMode.ADD, [SEEN, "$Forwarded"])
        (state,) = res.changed
        assert state.flags == {SEEN, "$Forwarded"} and state.keywords == {"$Forwarded"}
        assert state.modseq > before and box.highestmodseq >= state.modseq
        (info,) = box.fetch_info([uid])
        assert info.flags == {SEEN, "$Forwarded"} and info.keywords == {"$Forwarded"}
        box.store_flags([uid], StoreMode.REMOVE, [SEEN])
        (state,) = box.store_flags([uid], StoreMode.REPLACE, [FLAGGED]).changed
        assert state.flags == {FLAGGED} and state.keywords == frozenset()
        stale = box.store_flags([uid], StoreMode.ADD, [SEEN], unchangedsince=before)
        assert stale.modified == [uid] and stale.changed == []
        assert uid in box.changed_since(before)
        with pytest.raises(InvalidFlag):
            box.store_flags([uid], StoreMode.ADD, ["\\Bogus"])
    with storage.select("INBOX") as other:
        assert other.fetch_info([uid])[0].flags == {FLAGGED}
    with pytest.raises(InvalidFlag):
        storage.append("INBOX", MSG, ["bad keyword"])


def test_flag_changes_of_another_view_show_on_refresh(storage: MailStorage) -> None:
    uid = storage.append("INBOX", MSG).uid_map[0]
    with storage.select("INBOX") as one, storage.select("INBOX") as two:
        one.store_flags([uid], StoreMode.ADD, [FLAGGED])
        assert not one.refresh().flag_changes  # its own change is not repeated
        (change,) = two.refresh().flag_changes
        assert change.uid == uid and FLAGGED in change.flags


def test_readonly_view_refuses_writes(storage: MailStorage) -> None:
    uid = storage.append("INBOX", MSG).uid_map[0]
    with storage.select("INBOX", readonly=True) as box:
        with pytest.raises(ReadOnlyMailbox):
            box.store_flags([uid], StoreMode.ADD, [SEEN])
        with pytest.raises(ReadOnlyMailbox):
            box.expunge()


# --- expunge, copy, move ---------------------------------------------------------------------------


def test_expunge(storage: MailStorage) -> None:
    uids = [storage.append("INBOX", msg(i)).uid_map[0] for i in range(4)]
    with storage.select("INBOX") as box:
        modseq = box.highestmodseq
        box.store_flags([uids[0], uids[2], uids[3]], StoreMode.ADD, [DELETED])
        assert box.expunge([uids[0], uids[2]]) == [uids[0], uids[2]]  # UID EXPUNGE: only these
        assert box.exists == 4  # until refresh
        changes = box.refresh()
        assert changes.expunged_uids == [uids[0], uids[2]] and changes.expunged_seqs == [3, 1]
        assert list(box.uids) == [uids[1], uids[3]]
        assert set(box.expunged_since(modseq) or []) >= {uids[0], uids[2]}
        with pytest.raises(MessageExpunged):
            box.open_message(uids[0])
        assert box.expunge() == [uids[3]]


def test_copy_and_move(storage: MailStorage) -> None:
    storage.create("Dest")
    a = storage.append("INBOX", msg(1), [FLAGGED]).uid_map[0]
    b = storage.append("INBOX", msg(2)).uid_map[0]
    dest_validity = storage.status("Dest", ["UIDVALIDITY"])["UIDVALIDITY"]
    with storage.select("INBOX") as box:
        copied = box.copy([a], "Dest")
        assert copied.uidvalidity == dest_validity and set(copied.uid_map) == {a}
        moved = box.move([b], "Dest")
        assert set(moved.uid_map) == {b}
        assert box.refresh().expunged_uids == [b]
        with pytest.raises(MailboxNotFound):
            box.copy([a], "Nowhere")
    with storage.select("Dest") as dest:
        assert sorted(dest.uids) == sorted([copied.uid_map[a], moved.uid_map[b]])
        info = {i.uid: i for i in dest.fetch_info(dest.uids)}
        assert FLAGGED in info[copied.uid_map[a]].flags
        assert dest.open_message(moved.uid_map[b]) == msg(2)


# --- deliver and usage ----------------------------------------------------------------------------


def test_deliver_is_seen_by_views_and_reads_back(storage: MailStorage) -> None:
    with storage.select("INBOX") as box:
        got = storage.deliver([MSG[:20], MSG[20:].replace(b"\r\n", b"\n")])
        assert got.mailbox == "INBOX" and not got.duplicate
        (uid,) = box.refresh().new_uids
        assert box.open_message(uid) == MSG
        assert box.fetch_info([uid])[0].flags == frozenset()
    stored = storage.read_delivered(got.key)
    assert stored is not None and b"line two" in stored
    assert storage.read_delivered(got.key, limit=4) == stored[:4]


def test_deliver_by_id_stores_once(storage: MailStorage) -> None:
    first = DeliveryId("0ABCDEF", 1, 1_700_000_000.5)
    got = storage.deliver([MSG], delivery_id=first)
    assert storage.deliver([MSG], delivery_id=first).duplicate
    assert storage.delivered(first) is not None and storage.delivered(first).key == got.key
    assert storage.delivered(DeliveryId("0ABCDEF", 2, 1_700_000_000.5)) is None
    with storage.select("INBOX") as box:  # a reader takes it in and flags it
        (uid,) = box.uids
        box.store_flags([uid], StoreMode.ADD, [SEEN])
    again = storage.deliver([MSG], delivery_id=first, retry=True)
    assert again.duplicate and again.key == got.key
    assert storage.status("INBOX", ["MESSAGES"]) == {"MESSAGES": 1}
    stored = storage.read_delivered(got.key)
    assert stored is not None and b"Subject: hello" in stored


def test_deliver_with_flags_into_a_folder(storage: MailStorage) -> None:
    storage.create("Junk")
    got = storage.deliver([MSG], mailbox="Junk", flags=[SEEN, "$Junk"])
    assert got.mailbox == "Junk"
    with storage.select("Junk") as box:
        (info,) = box.fetch_info(box.uids)
        assert info.flags == {SEEN, "$Junk"} and info.keywords == {"$Junk"}
    assert storage.status("INBOX", ["MESSAGES"]) == {"MESSAGES": 0}
    with pytest.raises(MailboxNotFound):
        storage.deliver([MSG], mailbox="Spam")
    with pytest.raises(InvalidFlag):
        storage.deliver([MSG], flags=["\\Bogus"])


def test_usage_counts_every_mailbox(storage: MailStorage) -> None:
    assert storage.usage() == Usage(0, 0)
    storage.create("Sent")
    storage.deliver([MSG])
    one = storage.usage()
    assert one.messages == 1 and one.bytes > 0
    storage.append("Sent", msg(2))
    two = storage.usage()
    assert two.messages == 2 and two.bytes > one.bytes
    with storage.select("Sent") as box:
        box.store_flags(box.uids, StoreMode.ADD, [DELETED])
        box.expunge()
    assert storage.usage() == one


def test_quota(storage: MailStorage) -> None:
    storage.deliver([MSG])
    used = storage.usage().bytes
    storage.check_quota(None, 10**9)
    storage.check_quota(used + 10, 10)
    with pytest.raises(OverQuota) as caught:
        storage.check_quota(used + 10, 11)
    assert (caught.value.used, caught.value.limit, caught.value.kind) == (used, used + 10, ErrorKind.OVER_QUOTA)
    with pytest.raises(OverQuota):
        storage.deliver([MSG], quota=used + 10, size=len(MSG))
    assert storage.usage().messages == 1
    storage.deliver([MSG], quota=used * 3, size=len(MSG))
    assert storage.usage().messages == 2


# --- error kinds ------------------------------------------------------------------------------------


def test_errors_carry_their_kind(storage: MailStorage) -> None:
    def kind_of(call, *args) -> ErrorKind:  # noqa: ANN001
        with pytest.raises(Exception) as caught:
            call(*args)
        return caught.value.kind

    storage.create("X")
    assert kind_of(storage.select, "Missing") is ErrorKind.NOT_FOUND
    assert kind_of(storage.create, "X") is ErrorKind.EXISTS
    assert kind_of(storage.delete, "INBOX") is ErrorKind.NOT_ALLOWED
    assert kind_of(storage.create, "a//b") is ErrorKind.INVALID_NAME
    assert kind_of(storage.append, "INBOX", MSG, ["\\Nope"]) is ErrorKind.INVALID_FLAG
    uid = storage.append("INBOX", MSG).uid_map[0]
    with storage.select("INBOX", readonly=True) as box:
        assert kind_of(box.store_flags, [uid], StoreMode.ADD, [SEEN]) is ErrorKind.READ_ONLY
    with storage.select("INBOX") as box:
        box.store_flags([uid], StoreMode.ADD, [DELETED])
        box.expunge()
        assert kind_of(box.open_message, uid) is ErrorKind.EXPUNGED
