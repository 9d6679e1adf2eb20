"""A real Dovecot and Dovetail serve the same Maildir, one after the other and at the same time, and
agree on UIDs, flags and keywords. Dovetail's side runs with the mail user's uid, as the imapd would."""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Iterator

import pytest

from dovetail.storage import open_storage
from dovetail.storage.api import ANSWERED, DELETED, FLAGGED, SEEN, StoreMode
from tests.interop_dovecot import dovecot  # noqa: F401

pytestmark = pytest.mark.interop
USER, PW = "u@example.org", "pw"


def msg(subject: str) -> bytes:
    return f"From: a@example.org\r\nTo: b@example.com\r\nSubject: {subject}\r\n\r\nbody of {subject}\r\n".encode()


@contextlib.contextmanager
def as_mail_user(instance) -> Iterator[None]:
    """Switch the effective uid (the interpreter's own files may be unreadable to that user, so
    everything is imported beforehand)."""
    import pickle  # noqa: F401

    import dovetail.maildir.storage  # noqa: F401
    from dovetail.log import get_logger

    get_logger("maildir").debug("interop test switching uid")
    "codec".encode("utf-16-be")
    os.setegid(instance.user.pw_gid)
    os.seteuid(instance.user.pw_uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def dovecot_view(client) -> dict[int, tuple[set[str], str]]:
    """UID -> (flags without \\Recent, subject) as Dovecot reports them."""
    typ, data = client.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK"
    out = {}
    for item in data:
        if not isinstance(item, tuple):
            continue
        head, literal = item
        uid = int(re.search(rb"UID (\d+)", head).group(1))
        flags = set(re.search(rb"FLAGS \(([^)]*)\)", head).group(1).decode().split()) - {"\\Recent"}
        subject = literal.decode().split(":", 1)[1].strip()
        out[uid] = (flags, subject)
    return out


def dovetail_view(box) -> dict[int, tuple[set[str], str]]:
    box.refresh()
    return {i.uid: (set(i.flags), i.envelope[1]) for i in box.fetch_info(box.uids)}


def test_dovetail_writes_dovecot_reads(dovecot) -> None:  # noqa: F811
    maildir = dovecot.add_user(USER, PW)
    with as_mail_user(dovecot):
        storage = open_storage(maildir)
        storage.create("Work/Sub")
        storage.subscribe("Work/Sub")
        box = storage.select("INBOX")
        u1 = box.append(msg("one"), [SEEN, "$Forwarded"])
        u2 = box.append(msg("two"), ["Project"])
        u3 = box.append(msg("three"))
        box.refresh()
        box.store_flags([u2], StoreMode.ADD, [FLAGGED, "Todo"])
        box.store_flags([u3], StoreMode.ADD, [DELETED])
        assert box.expunge() == [u3]
        ours = dovetail_view(box)
        validity = box.uidvalidity
    client = dovecot.imap(USER, PW)
    try:
        typ, data = client.select("INBOX")
        assert typ == "OK"
        assert client.response("UIDVALIDITY")[1] == [str(validity).encode()]
        theirs = dovecot_view(client)
        assert theirs == ours
        assert theirs[u1][0] == {SEEN, "$Forwarded"} and theirs[u2][0] == {FLAGGED, "Project", "Todo"}
        typ, listing = client.list()
        assert any(b'"Work/Sub"' in line or b" Work/Sub" in line for line in listing), listing
        typ, lsub = client.lsub()
        assert any(b"Work/Sub" in line for line in lsub)
    finally:
        client.logout()


def test_dovecot_writes_dovetail_reads(dovecot) -> None:  # noqa: F811
    maildir = dovecot.add_user(USER, PW)
    client = dovecot.imap(USER, PW)
    try:
        for s in ("alpha", "beta", "gamma"):
            assert client.append("INBOX", None, None, msg(s))[0] == "OK"
        client.create("Entw&APw-rfe")
        client.subscribe("Entw&APw-rfe")
        client.select("INBOX")
        client.uid("STORE", "1", "+FLAGS", "(\\Answered Work)")
        client.uid("STORE", "2", "+FLAGS", "(\\Seen $Label1)")
        client.uid("STORE", "3", "+FLAGS", "(\\Deleted)")
        client.expunge()
        theirs = dovecot_view(client)
    finally:
        client.logout()
    with as_mail_user(dovecot):
        storage = open_storage(maildir)
        box = storage.select("INBOX")
        assert dovetail_view(box) == theirs
        assert theirs[1][0] == {ANSWERED, "Work"}
        assert "Entwürfe" in [m.name for m in storage.list_mailboxes()]
        assert "Entwürfe" in storage.list_subscribed()


def test_both_at_once(dovecot) -> None:  # noqa: F811
    maildir = dovecot.add_user(USER, PW)
    with as_mail_user(dovecot):
        storage = open_storage(maildir)
        box = storage.select("INBOX")
    client = dovecot.imap(USER, PW)
    client.select("INBOX")
    errors: list[BaseException] = []

    def dovecot_appends() -> None:
        try:
            for i in range(15):
                assert client.append("INBOX", None, None, msg(f"dovecot {i}"))[0] == "OK"
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    try:
        with as_mail_user(dovecot):
            t = threading.Thread(target=dovecot_appends)
            t.start()
            ours_uids = [box.append(msg(f"dovetail {i}")) for i in range(15)]
            t.join()
            assert not errors, errors
            assert len(set(ours_uids)) == 15
            assert len(box.refresh().new_uids) == 30
            box.store_flags(ours_uids[:5], StoreMode.ADD, [SEEN, "Mine"])
            ours = dovetail_view(box)
        client.noop()
        client.uid("STORE", "1:*", "+FLAGS", "(\\Flagged)")
        theirs = dovecot_view(client)
        assert set(theirs) == set(ours) and len(theirs) == 30
        assert {uid: s for uid, (_f, s) in theirs.items()} == {uid: s for uid, (_f, s) in ours.items()}
        for uid in ours_uids[:5]:
            assert theirs[uid][0] == {SEEN, "Mine", FLAGGED}
        with as_mail_user(dovecot):
            ch = box.refresh()
            assert len(ch.flag_changes) == 30
            assert dovetail_view(box) == theirs
    finally:
        client.logout()


def test_dovecot_serves_dovetail_deliveries_in_new(dovecot) -> None:  # noqa: F811
    """Files written into new/ with ,S= and ,W= in the name: Dovecot trusts those sizes."""
    maildir = dovecot.add_user(USER, PW)
    with as_mail_user(dovecot):
        storage = open_storage(maildir)
        storage.append("INBOX", msg("sized"))
        box = storage.select("INBOX")
        size = box.fetch_info(box.uids)[0].size
    client = dovecot.imap(USER, PW)
    try:
        client.select("INBOX")
        typ, data = client.fetch("1", "(RFC822.SIZE)")
        assert f"RFC822.SIZE {size}".encode() in data[0]
    finally:
        client.logout()
