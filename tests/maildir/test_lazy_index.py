"""A sync takes a new message's facts from its file name: the first SELECT of a large Maildir written
by another program opens no message file. Dates and parsed facts are learnt on first need and kept
in the index for every later session."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from dovetail.maildir.index import DATE_UNKNOWN, INDEX_FILE
from dovetail.maildir.messagefacts import FileReads
from dovetail.storage import open_storage
from dovetail.storage.api import FLAGGED, SEEN

BASE_TIME = 1_700_000_000


def message(i: int) -> bytes:
    return (f"From: Sender {i} <s{i}@example.org>\nTo: u@example.com\nSubject: message {i}\n"
            f"Message-ID: <{i}@example.org>\n\nbody of message {i}\n").encode()


def write_maildir(root: Path, count: int, *, sizes_in_names: bool = True) -> dict[str, tuple[int, float, str]]:
    """``count`` messages written straight into ``cur/`` as another deliverer would; returns
    basename -> (RFC822.SIZE, mtime, flag letters)."""
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    out = {}
    for i in range(count):
        data = message(i)
        vsize = len(data) + data.count(b"\n")
        flags = ("F" if i % 7 == 0 else "") + ("S" if i % 2 == 0 else "")
        base = f"{BASE_TIME + i}.M{i}P1.writer" + (f",S={len(data)},W={vsize}" if sizes_in_names else "")
        path = root / "cur" / f"{base}:2,{flags}"
        path.write_bytes(data)
        when = BASE_TIME + 60 * i
        os.utime(path, (when, when))
        out[base] = (vsize, float(when), flags)
    return out


def index_rows(root: Path, cols: str) -> list[tuple]:
    db = sqlite3.connect(root / INDEX_FILE)
    try:
        return db.execute(f"SELECT {cols} FROM msg ORDER BY uid").fetchall()
    finally:
        db.close()


def index_count(root: Path, where: str) -> int:
    db = sqlite3.connect(root / INDEX_FILE)
    try:
        return db.execute(f"SELECT count(*) FROM msg WHERE {where}").fetchone()[0]
    finally:
        db.close()


def test_first_select_of_a_large_maildir_opens_no_message_file(tmp_path: Path) -> None:
    root = tmp_path / "Maildir"
    written = write_maildir(root, 10_000)
    st = open_storage(root)
    reads = FileReads.count
    box = st.select("INBOX")
    try:
        assert len(box.uids) == 10_000
        infos = box.fetch_info(box.uids, envelope=False, bodystructure=False, dates=False)
        status = st.status("INBOX", ["MESSAGES", "UNSEEN", "SIZE"])
        assert FileReads.count == reads  # sizes and flags came from the names alone
        by_size = sorted((i.size, SEEN in i.flags, FLAGGED in i.flags) for i in infos)
        assert by_size == sorted((v, "S" in f, "F" in f) for v, _d, f in written.values())
        assert status["MESSAGES"] == 10_000 and status["UNSEEN"] == 5_000
        assert status["SIZE"] == sum(v for v, _d, _f in written.values())
        # Nothing was parsed and no date looked up: the rows hold what the names say.
        assert index_count(root, "parts IS NULL AND idate = -1") == 10_000
    finally:
        box.close()


def test_parsed_facts_are_learnt_on_first_need_and_kept(tmp_path: Path) -> None:
    root = tmp_path / "Maildir"
    write_maildir(root, 3)
    st = open_storage(root)
    box = st.select("INBOX")
    try:
        uid = box.uids[1]
        reads = FileReads.count
        (info,) = box.fetch_info([uid])
        assert info.envelope[1] == "message 1"
        assert FileReads.count == reads + 1
        (again,) = box.fetch_info([uid], raw=True)
        assert b'"message 1"' in again.envelope_imap
        assert FileReads.count == reads + 1  # the second time from the index
    finally:
        box.close()
    # Another session (a new connection to the index) finds the parse there too.
    envelope, parts = index_rows(root, "envelope, parts")[1]
    assert "message 1" in envelope and parts is not None
    other = open_storage(root).select("INBOX")
    try:
        reads = FileReads.count
        assert other.fetch_info([uid])[0].envelope[1] == "message 1"
        assert FileReads.count == reads
    finally:
        other.close()


def test_header_search_reads_headers_and_sections_parse_on_first_need(tmp_path: Path) -> None:
    root = tmp_path / "Maildir"
    write_maildir(root, 5)
    box = open_storage(root).select("INBOX")
    try:
        headers = box.cached_headers(box.uids)
        assert sorted(headers) == sorted(box.uids)
        assert b"Subject: message 4\r\n" in headers[box.uids[4]]
        assert index_count(root, "header IS NULL") == 0 and index_count(root, "parts IS NOT NULL") == 0
        reads = FileReads.count
        assert box.cached_headers(box.uids) == headers
        assert FileReads.count == reads  # kept in the index
        assert box.get_section(box.uids[2], "TEXT") == b"body of message 2\r\n"
        assert index_count(root, "parts IS NOT NULL") == 1
        box.fetch_info(box.uids)  # a full parse keeps the same header blocks
        assert index_count(root, "parts IS NULL") == 0
        assert box.cached_headers(box.uids) == headers
    finally:
        box.close()


def test_internal_dates_come_from_the_files_when_asked(tmp_path: Path) -> None:
    root = tmp_path / "Maildir"
    written = write_maildir(root, 4)
    box = open_storage(root).select("INBOX")
    try:
        assert {d for (d,) in index_rows(root, "idate")} == {DATE_UNKNOWN}
        dates = sorted(i.internal_date.timestamp() for i in box.fetch_info(box.uids, envelope=False,
                                                                            bodystructure=False))
        assert dates == sorted(d for _v, d, _f in written.values())
        assert sorted(d for (d,) in index_rows(root, "idate")) == dates  # kept for next time
        assert sorted(f[2] for f in box.message_facts()) == dates
    finally:
        box.close()


def test_search_facts_learn_the_dates_the_index_lacks(tmp_path: Path) -> None:
    root = tmp_path / "Maildir"
    written = write_maildir(root, 4)
    box = open_storage(root).select("INBOX")
    try:
        facts = box.message_facts()
        assert sorted(f[2] for f in facts) == sorted(d for _v, d, _f in written.values())
    finally:
        box.close()


def test_names_without_sizes_are_measured(tmp_path: Path) -> None:
    root = tmp_path / "Maildir"
    written = write_maildir(root, 3, sizes_in_names=False)  # as Postfix's virtual(8) names files
    box = open_storage(root).select("INBOX")
    try:
        sizes = sorted(i.size for i in box.fetch_info(box.uids, envelope=False, bodystructure=False))
        assert sizes == sorted(v for v, _d, _f in written.values())
    finally:
        box.close()
