"""Messages and their search text are kept in memory once read: what is served from the cache must
be what the file says, a folder made again under the same name must not be served its
predecessor's messages, and the cache stays within its bound."""

from __future__ import annotations

from pathlib import Path

import pytest

from dovetail.maildir.messagecache import MESSAGES, TEXTS, MessageCache
from dovetail.mime.text import body_text, fold_case
from dovetail.storage import open_storage
from dovetail.storage.api import MessageExpunged, StoreMode


def mail(subject: str, body: str) -> bytes:
    return f"From: a@example.org\nTo: u@example.com\nSubject: {subject}\n\n{body}\n".encode()


def test_second_read_served_from_memory_is_the_file(tmp_path: Path) -> None:
    st = open_storage(tmp_path / "u")
    st.create("Box")
    st.append("Box", mail("one", "first body"))
    box = st.select("Box")
    uid = box.uids[0]
    first = box.open_message(uid)
    assert first == mail("one", "first body").replace(b"\n", b"\r\n")
    assert MESSAGES.get((box.folder.path_text, box.uidvalidity, uid)) == first
    assert box.open_message(uid) is first  # the cached copy, no second read
    assert box.message_text(uid) == body_text(first)
    assert box.folded_text(uid) == fold_case(body_text(first))
    assert box.folded_text(uid) is TEXTS.get((box.folder.path_text, box.uidvalidity, uid))
    assert "first body" in box.message_text(uid)
    box.close()


def test_folder_made_again_is_not_served_old_messages(tmp_path: Path) -> None:
    st = open_storage(tmp_path / "u")
    st.create("Box")
    st.append("Box", mail("old", "old text"))
    box = st.select("Box")
    old_uid, old_uv = box.uids[0], box.uidvalidity
    assert "old text" in box.folded_text(old_uid)
    box.close()
    st.delete("Box")
    st.create("Box")
    st.append("Box", mail("new", "new text"))
    box = st.select("Box")
    assert box.uidvalidity != old_uv
    assert box.uids[0] == old_uid  # the same UID, another message
    assert b"new text" in box.open_message(box.uids[0])
    assert "new text" in box.folded_text(box.uids[0])
    assert TEXTS.get((box.folder.path_text, box.uidvalidity, box.uids[0])) is not None
    box.close()


def test_bound_evicts_least_recently_used() -> None:
    cache = MessageCache(max_bytes=800)
    for i in range(8):
        cache.put(i, bytes(100))
    assert cache.get(0) is not None  # 0 is now the most recently used
    cache.put(8, bytes(100))
    assert cache.size <= 800
    assert cache.get(1) is None and cache.get(0) is not None and cache.get(8) is not None
    cache.put("big", bytes(101))  # more than an eighth of the bound: never kept
    assert cache.get("big") is None
    cache.forget(0)
    assert cache.get(0) is None and cache.size == 700


def test_sections_from_memory_match_a_fresh_parse(tmp_path: Path) -> None:
    """Part trees and header fields kept in memory give the bytes a parse of the message gives."""
    from dovetail.mime.parser import parse_message
    from dovetail.mime.sections import extract, parse_section

    raw = (b"From: a@example.org\nSubject: s\nX-Long: one\n two\nContent-Type: multipart/mixed; boundary=b\n\n"
           b"--b\nContent-Type: text/plain\n\npart one\n--b\nContent-Type: text/html\n\n<p>two</p>\n--b--\n")
    st = open_storage(tmp_path / "u")
    st.create("Box")
    st.append("Box", raw)
    box = st.select("Box")
    uid = box.uids[0]
    crlf = raw.replace(b"\n", b"\r\n")
    root = parse_message(crlf)
    for spec in ("HEADER.FIELDS (SUBJECT X-LONG)", "HEADER.FIELDS.NOT (FROM)", "1", "2.MIME", "TEXT", "HEADER"):
        want = extract(crlf, root, parse_section(spec))
        assert box.get_section(uid, spec) == want
        assert box.get_section(uid, spec) == want  # the second time from the process's cache
    assert box.get_section(uid, "HEADER.FIELDS (X-LONG)") == b"X-Long: one\r\n two\r\n\r\n"
    box.close()


def test_flag_rows_are_fetch_info(tmp_path: Path) -> None:
    st = open_storage(tmp_path / "u")
    st.create("Box")
    for n in range(4):
        st.append("Box", mail(f"m{n}", "x"), flags=["\\Seen", "$Work"] if n % 2 else [])
    box = st.select("Box")
    other = st.select("Box")
    other.store_flags([other.uids[2]], StoreMode.ADD, ["\\Deleted"])
    other.expunge()  # box has not refreshed: the message comes from the expunge history
    want = [(i.uid, i.flags, i.recent, i.modseq, i.size)
            for i in box.fetch_info(box.uids, envelope=False, bodystructure=False, dates=False)]
    assert len(want) == 4
    assert box.flag_rows(box.uids) == want
    assert box.flag_rows(box.uids[1:2]) == want[1:2]
    box.close()
    other.close()


def test_a_known_expunge_is_not_served_from_memory(tmp_path: Path) -> None:
    """Once the view has heard of an expunge, the message's bytes are refused even while they are
    still in the cache (as when they are not)."""
    st = open_storage(tmp_path / "u")
    st.create("Box")
    st.append("Box", mail("gone", "soon"))
    box = st.select("Box")
    uid = box.uids[0]
    assert b"soon" in box.open_message(uid)
    other = st.select("Box")
    other.store_flags([uid], StoreMode.ADD, ["\\Deleted"])
    other.expunge()
    box.refresh(allow_expunges=False)  # heard of, not yet reported: the UID is still in the view
    assert uid in box.uids
    with pytest.raises(MessageExpunged):
        box.open_message(uid)
    with pytest.raises(MessageExpunged):
        box.get_section(uid, "TEXT")
    box.close()
    other.close()
