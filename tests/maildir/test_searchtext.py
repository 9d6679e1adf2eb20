"""The folder's search text store: what it serves is what decoding the message gives, after an expunge,
a corrupt file, a folder made again, a message changed behind our back, and it stays within its bound."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from dovetail.maildir.messagecache import TEXTS
from dovetail.maildir.searchtext import STORE_FILE, TextStore, store_for
from dovetail.mime.text import body_text, fold_case
from dovetail.storage import open_storage


def mail(subject: str, body: str) -> bytes:
    return (f"From: a@example.org\nTo: u@example.com\nSubject: {subject}\n"
            f"Content-Type: text/plain; charset=utf-8\n\n{body}\n").encode()


def decoded(raw: bytes) -> str:
    return fold_case(body_text(raw))


def forget_memory(box) -> None:  # noqa: ANN001 - a MaildirMailbox
    for uid in box.uids:
        TEXTS.forget((box.folder.path_text, box.uidvalidity, uid))


def test_text_is_kept_on_disk_and_read_back(tmp_path: Path) -> None:
    st = open_storage(tmp_path / "u")
    st.create("Box")
    raws = [mail(f"s{i}", f"Body NUMBER {i} Grüße") for i in range(5)]
    for raw in raws:
        st.append("Box", raw)
    box = st.select("Box")
    assert [box.folded_text(u) for u in box.uids] == [decoded(r) for r in raws]
    store = store_for(box.folder.path)
    store.flush()
    assert (box.folder.path / STORE_FILE).exists()
    # Another process (a store of its own) finds the texts there.
    other = TextStore(box.folder.path)
    assert [other.get(box.uidvalidity, u) for u in box.uids] == [decoded(r) for r in raws]
    other.close()
    forget_memory(box)
    assert box.folded_text(box.uids[2]) == decoded(raws[2])
    box.close()


def test_expunged_text_goes_and_new_uids_get_their_own(tmp_path: Path) -> None:
    st = open_storage(tmp_path / "u")
    st.create("Box")
    st.append("Box", mail("a", "alpha text"), flags=["\\Deleted"])
    st.append("Box", mail("b", "beta text"))
    box = st.select("Box")
    first, second = box.uids
    assert "alpha" in box.folded_text(first)
    assert "beta" in box.folded_text(second)
    store = store_for(box.folder.path)
    store.flush()
    assert box.expunge() == [first]
    fresh = TextStore(box.folder.path)
    assert fresh.get(box.uidvalidity, first) is None  # its row went with the expunge
    assert fresh.get(box.uidvalidity, second) == decoded(mail("b", "beta text"))
    fresh.close()
    box.close()
    st.append("Box", mail("c", "gamma text"))
    box = st.select("Box")
    forget_memory(box)
    assert [box.folded_text(u) for u in box.uids] == [decoded(mail("b", "beta text")),
                                                       decoded(mail("c", "gamma text"))]
    box.close()


def test_corrupt_file_is_made_anew_and_answers_stay_right(tmp_path: Path) -> None:
    st = open_storage(tmp_path / "u")
    st.create("Box")
    st.append("Box", mail("a", "needle in here"))
    box = st.select("Box")
    uid = box.uids[0]
    box.folded_text(uid)
    store_for(box.folder.path).close()
    path = box.folder.path / STORE_FILE
    for suffix in ("-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    path.write_bytes(b"this is not a database" * 100)
    forget_memory(box)
    store = TextStore(box.folder.path)
    assert store.get(box.uidvalidity, uid) is None
    store.put(box.uidvalidity, uid, "kept again")
    store.flush()
    assert store.get(box.uidvalidity, uid) == "kept again"  # a valid store again
    store.close()
    assert sqlite3.connect(path).execute("SELECT count(*) FROM text").fetchone() == (1,)
    box.close()


def test_damaged_row_is_never_served(tmp_path: Path) -> None:
    st = open_storage(tmp_path / "u")
    st.create("Box")
    st.append("Box", mail("a", "the real text"))
    box = st.select("Box")
    uid = box.uids[0]
    box.folded_text(uid)
    store_for(box.folder.path).flush()
    db = sqlite3.connect(box.folder.path / STORE_FILE)
    db.execute("UPDATE text SET body=? WHERE uid=?", (b"the fake text", uid))  # the CRC no longer matches
    db.commit()
    db.close()
    forget_memory(box)
    store_for(box.folder.path).close()
    assert TextStore(box.folder.path).get(box.uidvalidity, uid) is None
    assert box.folded_text(uid) == decoded(mail("a", "the real text"))
    box.close()


def test_folder_made_again_is_not_served_old_texts(tmp_path: Path) -> None:
    st = open_storage(tmp_path / "u")
    st.create("Box")
    st.append("Box", mail("old", "old words"))
    box = st.select("Box")
    old_uid, old_uv = box.uids[0], box.uidvalidity
    assert "old words" in box.folded_text(old_uid)
    store_for(box.folder.path).flush()
    box.close()
    st.delete("Box")
    st.create("Box")
    st.append("Box", mail("new", "new words"))
    box = st.select("Box")
    assert box.uidvalidity != old_uv and box.uids[0] == old_uid
    forget_memory(box)
    assert box.folded_text(old_uid) == decoded(mail("new", "new words"))
    box.close()


def test_message_replaced_behind_our_back(tmp_path: Path) -> None:
    """Another program removes a message file and delivers a new one: the new UID gets its own text,
    the old UID's row is never served for it."""
    st = open_storage(tmp_path / "u")
    st.create("Box")
    st.append("Box", mail("a", "before change"))
    box = st.select("Box")
    old_uid = box.uids[0]
    assert "before change" in box.folded_text(old_uid)
    store_for(box.folder.path).flush()
    box.close()
    cur = box.folder.path / "cur"
    for name in os.listdir(cur):
        os.unlink(cur / name)
    (box.folder.path / "new" / "1700000000.M1P1.other").write_bytes(mail("b", "after change"))
    box = st.select("Box")
    assert box.uids and old_uid not in box.uids
    forget_memory(box)
    assert box.folded_text(box.uids[0]) == decoded(mail("b", "after change"))
    box.close()


def test_store_stays_within_its_bound_and_prunes_gone_rows(tmp_path: Path) -> None:
    store = TextStore(tmp_path, max_bytes=10_000)
    for uid in range(1, 40):
        store.put(7, uid, "x" * 1000)
    store.flush()
    assert store.size <= 10_000
    kept = [u for u in range(1, 40) if store.get(7, u) is not None]
    assert 0 < len(kept) <= 10
    # Full: nothing more is kept until rows of messages no longer in the folder are pruned.
    store.put(7, 100, "y" * 1000, live=[100])
    store.flush()
    assert all(store.get(7, u) is None for u in kept)
    assert store.get(7, 100) == "y" * 1000
    assert store.size == 1000
    store.close()
    # A text of another UIDVALIDITY empties the store.
    again = TextStore(tmp_path, max_bytes=10_000)
    assert again.get(8, 100) is None and again.size == 0
    again.close()


def test_tenant_move_leaves_the_store_behind(tmp_path: Path) -> None:
    """The store is a cache of what the messages say: a tree export does not carry it."""
    from dovetail.storage.transfer import tree_files

    st = open_storage(tmp_path / "u")
    st.append("INBOX", mail("a", "some text"))
    box = st.select("INBOX")
    box.folded_text(box.uids[0])
    store_for(box.folder.path).flush()
    assert (box.folder.path / STORE_FILE).exists()
    files = tree_files(tmp_path / "u")
    assert "dovetail-index.sqlite" in files and STORE_FILE not in files
    box.close()


def test_large_texts_are_read_when_asked_for(tmp_path: Path) -> None:
    store = TextStore(tmp_path)
    big = "b" * (300 * 1024)
    for uid, text in ((1, "small one"), (2, big), (3, "small three")):
        store.put(5, uid, text)
    store.flush()
    assert [store.get(5, u) for u in (1, 2, 3)] == ["small one", big, "small three"]
    assert store.get(5, 4) is None
    store.close()


def test_search_over_many_messages_from_one_scan_matches_decoding(tmp_path: Path) -> None:
    """A SEARCH BODY/TEXT over more messages than it reads one by one answers from a pass over the
    store: the same UIDs as decoding every message, for ASCII and folded non-ASCII needles, with
    messages not yet kept, a damaged row and an expunged message among them."""
    from dovetail.imap.commands.search import _matching
    from dovetail.imap.search import parse_search
    from dovetail.imap.search.match import folded_header_block

    st = open_storage(tmp_path / "u")
    st.create("Box")
    words = ["Straße", "GRÜSSE", "plain", "Ünïcode", "needle"]  # noqa: RUF001
    raws = [mail(f"s{i}", f"{words[i % 5]} number {i} {'NEEDLE' if i % 7 == 0 else ''}") for i in range(150)]
    folder = st.select("Box").folder.path
    for i, raw in enumerate(raws):  # delivered by another program, straight into the Maildir
        (folder / "cur" / f"{1700000000 + i}.M{i}P1.test:2,{'T' if i == 3 else ''}").write_bytes(raw)
    box = st.select("Box")
    uids = list(box.uids)
    for uid in uids[:100]:  # the first 100 are kept, the rest are decoded during the search
        box.folded_text(uid)
    store_for(box.folder.path).flush()
    db = sqlite3.connect(box.folder.path / STORE_FILE)
    db.execute("UPDATE text SET body=? WHERE uid=?", (b"needle strasse", uids[10]))  # a damaged row
    db.commit()
    db.close()
    store_for(box.folder.path).close()
    assert len(box.expunge()) == 1
    box.close()
    box = st.select("Box")
    assert len(box.uids) == 149
    found = 0
    bodies = [fold_case(body_text(box.open_message(u), crlf=True)) for u in box.uids]
    heads = [folded_header_block(box.get_section(u, "HEADER")) for u in box.uids]
    # Each needle twice: from the store's rows, then from its texts held in memory since; "s14" is in
    # a Subject only.
    values = ["needle", "STRASSE", "grüsse", "number 1", "absent", "s14"]
    for n, value in enumerate(values * 2):
        for key_name in ("BODY", "TEXT"):
            if n < len(values):
                forget_memory(box)
            _charset, key = parse_search([key_name, value])
            got = [m.uid for m in _matching(box, key, None, True)]
            folded = fold_case(key.value)
            want = [u for u, body, head in zip(box.uids, bodies, heads, strict=True)
                    if folded in body or (key_name == "TEXT" and folded in head)]
            assert got == want, (key_name, value)
            found += len(got)
    assert found > 300  # the needles do match, and the non-ASCII ones too:
    assert box.text_matches(fold_case("GRÜSSE")) is not None and box.text_matches(fold_case("GRÜSSE"))[0]
    box.close()


def test_texts_wait_while_another_process_writes(tmp_path: Path) -> None:
    """A batch that finds the store locked by another writer is kept and written with a later one."""
    from dovetail.maildir.searchtext import _FLUSH_COUNT

    store = TextStore(tmp_path)
    store.put(3, 1, "first")
    store.flush()
    other = sqlite3.connect(tmp_path / STORE_FILE, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    for uid in range(2, 2 + _FLUSH_COUNT):
        store.put(3, uid, f"text {uid}")
    other.execute("ROLLBACK")
    other.close()
    assert sqlite3.connect(tmp_path / STORE_FILE).execute("SELECT count(*) FROM text").fetchone() == (1,)
    for uid in range(2 + _FLUSH_COUNT, 2 + 2 * _FLUSH_COUNT):
        store.put(3, uid, f"text {uid}")
    assert sqlite3.connect(tmp_path / STORE_FILE).execute("SELECT count(*) FROM text").fetchone() == (
        1 + 2 * _FLUSH_COUNT,)
    fresh = TextStore(tmp_path)
    assert fresh.get(3, 2) == "text 2" and fresh.get(3, 1 + 2 * _FLUSH_COUNT) == f"text {1 + 2 * _FLUSH_COUNT}"
    fresh.close()
    store.close()


def test_scans_from_the_kept_texts_answer_as_the_rows_do(tmp_path: Path) -> None:
    """After the first scan the texts are searched in memory: the same UIDs as ``needle in text`` for
    each row, never for a needle that only spans two texts, and rows another process adds or deletes
    are seen by the next scan (a deleted row's UID may still be answered for: its text is the same)."""
    texts = {1: "alpha beta", 2: "", 3: "gamma", 4: "betagamma", 5: "ünïcode straße", 6: "ab"}  # noqa: RUF001
    store = TextStore(tmp_path)
    for uid, text in texts.items():
        store.put(7, uid, text)
    store.flush()

    def truth(needle: str) -> set[int]:
        return {u for u, t in texts.items() if needle in t}

    assert store.scan(7, "beta") == ({1, 4}, set(texts))  # the first scan reads the rows
    assert store._haystack is not None
    for needle in ["beta", "", "ag", "aga", "gammab", "betaga", "straße", "e", "ab", "aab", "x"]:
        assert store.scan(7, needle) == (truth(needle), set(texts)), needle
        assert {u for u in texts if store.contains(7, u, needle)} == truth(needle), needle
    assert store.contains(7, 99, "beta") is None  # not held: the caller reads it another way
    for _ in range(300):  # asked often enough, a needle is looked for in all texts and remembered
        assert [store.contains(7, u, "amm") for u in texts] == [u in truth("amm") for u in texts]
    assert store._haystack is not None and store._haystack.found[b"amm"] == truth("amm")
    other = TextStore(tmp_path)  # another process's store of the same folder
    other.put(7, 8, "late beta")
    other.forget(7, [3])
    other.close()
    texts[8] = "late beta"  # UID 3's text stays as it was: a UID's text never changes
    assert store.scan(7, "beta") == (truth("beta"), set(texts))
    assert store.scan(7, "gamma") == (truth("gamma"), set(texts))
    assert store.contains(7, 8, "late") is True and store.contains(7, 8, "gamma") is False
    store.close()
    assert store._haystack is None
