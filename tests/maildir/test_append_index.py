"""APPEND indexes the message itself: the index row equals what a sync would have written from the file,
the uidlist it wrote is reused without a parse, and the next sync finds nothing to do."""

from __future__ import annotations

import os
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dovetail.maildir import folder as folder_mod
from dovetail.maildir.index import INDEX_FILE
from dovetail.maildir.messagefacts import analyse
from dovetail.maildir.writerlock import WriterLock
from dovetail.storage import open_storage
from dovetail.storage.api import SEEN

MSG = (b"From: Alice <alice@example.org>\r\nTo: bob@example.com\r\nSubject: appended\r\n"
       b"Date: Mon, 2 Jan 2023 10:00:00 +0000\r\n\r\nbody line\r\n")
COLS = "uid, basename, filename, info, flags, size, vsize, idate, envelope, body, bodystructure, parts, " \
       "envelope_imap, body_imap, bodystructure_imap, header"


def rows(root: Path) -> list[tuple]:
    db = sqlite3.connect(root / INDEX_FILE)
    try:
        return db.execute(f"SELECT {COLS} FROM msg ORDER BY uid").fetchall()
    finally:
        db.close()


def test_append_writes_the_row_a_sync_would(tmp_path: Path) -> None:
    st = open_storage(tmp_path / "Maildir")
    st.select("INBOX").close()  # the folder exists and has a UIDVALIDITY
    when = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    res = st.append("INBOX", MSG, [SEEN, "$Label1"], when)
    uid = res.uid_map[0]
    appended = rows(st.root)
    assert [r[0] for r in appended] == [uid]
    assert "\\Seen" in appended[0][4].split() and "$Label1" in appended[0][4].split()
    assert appended[0][7] == when.timestamp()
    # Rebuild the index from the files alone: the same row comes out once its facts were asked for
    # (a sync takes only what the file name says).
    for suffix in ("", "-wal", "-shm"):
        Path(str(st.root / INDEX_FILE) + suffix).unlink(missing_ok=True)
    mb = st.select("INBOX")
    try:
        assert rows(st.root) != appended
        mb.fetch_info(mb.uids)
        assert rows(st.root) == appended
        assert list(mb.uids) == [uid]
        assert mb.uidvalidity == res.uidvalidity
    finally:
        mb.close()


def test_next_sync_after_append_writes_nothing(tmp_path: Path) -> None:
    st = open_storage(tmp_path / "Maildir")
    view = st.select("INBOX")
    try:
        before = view.highestmodseq
        uid = view.append(MSG, [SEEN])
        after_append = view.highestmodseq
        assert after_append == before + 1
        parses = []
        real = folder_mod.uidlist.parse

        def counting(text: str):
            parses.append(1)
            return real(text)

        folder_mod.uidlist.parse = counting
        try:
            changes = view.refresh()
        finally:
            folder_mod.uidlist.parse = real
        assert changes.new_uids == [uid]
        assert parses == []  # the uidlist APPEND wrote was remembered, not read back
        assert view.highestmodseq == after_append  # the sync found disk and index agreeing
        info = view.fetch_info([uid])[0]
        assert info.envelope is not None and SEEN in info.flags
    finally:
        view.close()


def test_message_renamed_before_indexing_is_left_to_sync(tmp_path: Path) -> None:
    st = open_storage(tmp_path / "Maildir")
    view = st.select("INBOX")
    try:
        f = view.folder
        tmp, base = f.write_tmp(MSG, None)
        os.rename(tmp, f.path / "cur" / f"{base}:2,")
        ul = f.assign_uids([base], None)
        uid = ul.by_basename()[base]
        os.rename(f.path / "cur" / f"{base}:2,", f.path / "cur" / f"{base}:2,S")
        assert f.index_placed([(uid, base, "", analyse(MSG))], ul.uidvalidity) is False
        changes = view.refresh()
        assert changes.new_uids == [uid]
        assert SEEN in view.fetch_info([uid])[0].flags
    finally:
        view.close()


def test_append_adds_a_line_to_the_uidlist_instead_of_rewriting_it(tmp_path: Path) -> None:
    st = open_storage(tmp_path / "Maildir")
    st.append("INBOX", MSG, [], None)
    path = st.root / "dovecot-uidlist"
    before = os.stat(path)
    first = path.read_text()
    uid = st.append("INBOX", MSG, [], None).uid_map[0]
    after = os.stat(path)
    assert after.st_ino == before.st_ino  # appended in place, as Dovecot does, not renamed over
    text = path.read_text()
    assert text.startswith(first) and text[len(first):].startswith(f"{uid} :")
    view = st.select("INBOX")
    assert list(view.uids)[-1] == uid and view.uidnext == uid + 1
    view.close()


def test_lines_another_writer_appended_are_read_without_parsing_the_whole_uidlist(tmp_path: Path,
                                                                                 monkeypatch) -> None:
    from dovetail.maildir import uidlist

    st = open_storage(tmp_path / "Maildir")
    for _ in range(3):
        st.append("INBOX", MSG, [], None)
    view = st.select("INBOX")
    folder = view.folder
    cached, _by_base = folder._cached_uidlist()
    nxt = cached.nextuid
    assert uidlist.append(st.root / "dovecot-uidlist", [(nxt, "1700000000.M1P1.other,S=10")])

    def no_full_parse(text):  # noqa: ANN001, ANN202
        raise AssertionError("the whole file was parsed again")

    monkeypatch.setattr(uidlist, "parse", no_full_parse)
    grown, by_base = folder._cached_uidlist()
    assert grown.entries[nxt] == ("1700000000.M1P1.other,S=10", "") and grown.nextuid == nxt + 1
    assert by_base["1700000000.M1P1.other,S=10"] == nxt and len(grown.entries) == 4
    assert cached.nextuid == nxt and len(cached.entries) == 3  # the shared copy was left alone
    monkeypatch.undo()
    assert uidlist.read(st.root / "dovecot-uidlist").entries == grown.entries
    view.close()


class WriterInTheMiddle:
    """Holds a writer between placing its files in ``cur/`` and numbering them until another session
    has waited for the writer lock, and counts the listings of ``cur/`` meanwhile."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch
        self.numbering, self.waiting = threading.Event(), threading.Event()
        self.listings: list[int] = []

    def arm(self) -> None:
        """From here on, the next writer stops in the middle (the set-up's own writes ran before)."""
        monkeypatch = self.monkeypatch
        real_assign, real_poll = folder_mod.syncapply.assign_uids, WriterLock._poll

        def slow_assign(*args, **kwargs):  # type: ignore[no-untyped-def]
            self.numbering.set()  # the files are in cur/ now, not yet numbered nor indexed
            assert self.waiting.wait(10), "the other session never waited for the writer"
            return real_assign(*args, **kwargs)

        def noting_poll(fd: int, mode: int, timeout: float) -> bool:
            self.waiting.set()
            return real_poll(fd, mode, timeout)

        monkeypatch.setattr(folder_mod.syncapply, "assign_uids", slow_assign)
        monkeypatch.setattr(WriterLock, "_poll", staticmethod(noting_poll))
        monkeypatch.setattr(folder_mod.Folder, "_sync_listed", lambda self_, *a: self.listings.append(1))


@pytest.fixture
def writer_in_the_middle(monkeypatch: pytest.MonkeyPatch) -> WriterInTheMiddle:
    return WriterInTheMiddle(monkeypatch)


def test_a_session_meeting_an_append_under_way_waits_for_it_instead_of_listing(
    tmp_path: Path, writer_in_the_middle: WriterInTheMiddle
) -> None:
    """The rename into ``cur/``, the numbering and the row happen under the writer lock: a session that
    refreshes meanwhile waits for the lock, then takes the new message from the index."""
    st = open_storage(tmp_path / "Maildir")
    st.append("INBOX", MSG)
    view = st.select("INBOX")
    writer_in_the_middle.arm()
    with ThreadPoolExecutor(2) as pool:
        appended = pool.submit(st.append, "INBOX", MSG + b"second\r\n")
        assert writer_in_the_middle.numbering.wait(10)
        changes = pool.submit(view.refresh).result(timeout=30)
        uid = appended.result(timeout=30).uid_map[0]
    try:
        assert changes.new_uids == [uid]
        assert writer_in_the_middle.listings == []
    finally:
        view.close()


def test_a_session_meeting_a_copy_under_way_waits_for_it_instead_of_listing(
    tmp_path: Path, writer_in_the_middle: WriterInTheMiddle
) -> None:
    """COPY places its files in ``cur/``, numbers and indexes them under the destination's writer lock,
    as APPEND does: a session of the destination refreshing meanwhile waits, then sees them at once."""
    st = open_storage(tmp_path / "Maildir")
    st.create("Archive")
    st.append("Archive", MSG)
    src_uids = [st.append("INBOX", MSG + b"%d\r\n" % i).uid_map[0] for i in range(3)]
    source = st.select("INBOX")
    view = st.select("Archive")
    writer_in_the_middle.arm()
    try:
        with ThreadPoolExecutor(2) as pool:
            copied = pool.submit(source.copy, src_uids, "Archive")
            assert writer_in_the_middle.numbering.wait(10)
            changes = pool.submit(view.refresh).result(timeout=30)
            result = copied.result(timeout=30)
        assert changes.new_uids == sorted(result.uid_map.values()) and len(changes.new_uids) == 3
        assert writer_in_the_middle.listings == []
        copies = {result.uid_map[i.uid]: (i.size, i.internal_date) for i in source.fetch_info(src_uids)}
        assert {i.uid: (i.size, i.internal_date) for i in view.fetch_info(changes.new_uids)} == copies
        assert os.listdir(view.folder.path / "tmp") == []
    finally:
        view.close()
        source.close()


def test_a_copy_whose_rename_fails_midway_leaves_nothing_behind(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A COPY is all or nothing: files already renamed into ``cur/`` are taken back, the rest of ``tmp/``
    removed, and a later sync finds no copy the client was told failed."""
    st = open_storage(tmp_path / "Maildir")
    st.create("Archive")
    src_uids = [st.append("INBOX", MSG + b"%d\r\n" % i).uid_map[0] for i in range(3)]
    source = st.select("INBOX")
    dest = st.select("Archive")
    before = sorted(os.listdir(dest.folder.path / "cur"))
    real_rename, calls = os.rename, []

    def failing_second(a, b):  # type: ignore[no-untyped-def]
        calls.append(b)
        if len(calls) == 2 and "Archive" in str(b):
            raise OSError(5, "Input/output error")
        return real_rename(a, b)

    monkeypatch.setattr(folder_mod.os, "rename", failing_second)
    try:
        with pytest.raises(OSError):
            source.copy(src_uids, "Archive")
        monkeypatch.undo()
        assert sorted(os.listdir(dest.folder.path / "cur")) == before
        assert os.listdir(dest.folder.path / "tmp") == []
        assert dest.refresh().new_uids == []
    finally:
        dest.close()
        source.close()
