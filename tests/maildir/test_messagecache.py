"""Messages and their search text are kept in memory once read: what is served from the cache must
be what the file says, a folder made again under the same name must not be served its
predecessor's messages, and the cache stays within its bound."""

from __future__ import annotations

from pathlib import Path

from dovetail.maildir.messagecache import MESSAGES, TEXTS, MessageCache
from dovetail.mime.text import body_text, fold_case
from dovetail.storage import open_storage


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
