"""Index connections handed on between the Folders of one process (see ``folderstate``): one Folder at
a time per connection, only while the folder has users, never one on a file that is no longer the
index; and what the views tell from their connection (``data_version``, ``total_changes``) stays true."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from dovetail.maildir import folder as folder_mod
from dovetail.maildir import mailbox as mailbox_mod
from dovetail.maildir.folder import Folder
from dovetail.maildir.folderstate import IDLE_CONNECTIONS_KEPT
from dovetail.maildir.index import INDEX_FILE
from dovetail.storage import open_storage

MSG = b"From: a@example.org\r\nSubject: note %d\r\n\r\nbody %d\r\n"


def _msg(n: int) -> bytes:
    return MSG % (n, n)


@pytest.fixture
def clock(monkeypatch):
    """Wall-clock time held still, so that fresh stamps stay trusted (the views' quiet check applies)."""
    now = [folder_mod.time.time()]
    monkeypatch.setattr(folder_mod.time, "time", lambda: now[0])
    monkeypatch.setattr(mailbox_mod.time, "time", lambda: now[0])
    return now


@pytest.fixture
def storage(tmp_path: Path):
    st = open_storage(tmp_path / "Maildir")
    st.create("Box")
    st.append("Box", _msg(0))
    return st


def _in_child(root: Path, code: str) -> str:
    """Run ``code`` (with ``st``, the storage at ``root``) in a second process; what it prints."""
    script = f"from dovetail.storage import open_storage\nst = open_storage({str(root)!r})\n{code}\n"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def _rows(index: Path) -> int:
    """Messages in the index file as a connection of its own reads them."""
    db = sqlite3.connect(index)
    try:
        return db.execute("SELECT count(*) FROM msg").fetchone()[0]
    finally:
        db.close()


def test_a_connection_serves_one_folder_at_a_time_and_is_reused_after(storage) -> None:
    path = storage.root / ".Box"
    holder = Folder(path)
    a, b = Folder(path), Folder(path)
    assert a.index.db.conn is not b.index.db.conn
    conn = a.index.db.conn
    a.close()
    with pytest.raises(sqlite3.ProgrammingError):
        a.index.db.execute("SELECT 1")  # a closed folder never reaches the connection it gave back
    c = Folder(path)
    assert c.index.db.conn is conn
    assert c.index.get_int("uidnext") == 2
    for f in (b, c, holder):
        f.close()


def test_the_last_user_closes_every_connection_and_the_wal_goes(storage) -> None:
    path = storage.root / ".Box"
    box = storage.select("Box")
    for n in range(IDLE_CONNECTIONS_KEPT + 2):  # more at once than are kept
        folders = [Folder(path) for _ in range(IDLE_CONNECTIONS_KEPT + 2)]
        folders[0].sync()
        for f in folders:
            f.close()
        storage.append("Box", _msg(n + 1))
    assert len(box.folder.state.idle) == IDLE_CONNECTIONS_KEPT
    assert os.path.exists(path / (INDEX_FILE + "-wal"))
    box.close()
    assert box.folder.state.idle == []
    for suffix in ("-wal", "-shm"):
        assert not os.path.exists(path / (INDEX_FILE + suffix))
    assert _rows(path / INDEX_FILE) == IDLE_CONNECTIONS_KEPT + 3  # every commit is in the file


def test_an_append_in_the_same_process_is_seen_by_the_open_view(storage, clock) -> None:
    """The APPEND's Folder commits on a connection other than the view's: the view's quiet check
    (another connection's commit moves its ``data_version``) is not fooled."""
    box = storage.select("Box")
    storage.status("Box", ["MESSAGES"])  # a connection waits on the folder's state now
    assert box.refresh_if_quiet() is not None
    idle = box.folder.state.idle
    assert len(idle) == 1 and idle[0][0] is not box.folder.index.db.conn
    storage.append("Box", _msg(1))
    assert box.refresh_if_quiet() is None
    assert box.refresh().new_uids == [2]
    assert box.refresh_if_quiet() is not None
    box.close()


def test_an_append_by_another_process_is_seen_by_the_open_view(storage, clock) -> None:
    box = storage.select("Box")
    storage.status("Box", ["MESSAGES"])
    assert box.refresh_if_quiet() is not None
    assert _in_child(storage.root, "print(st.append('Box', b'Subject: x\\r\\n\\r\\ny\\r\\n').uid_map[0])") == "2"
    assert box.refresh_if_quiet() is None
    assert box.refresh().new_uids == [2]
    assert storage.status("Box", ["MESSAGES"]) == {"MESSAGES": 2}
    box.close()


def test_no_connection_to_a_replaced_index_is_handed_out(storage) -> None:
    """A mailbox another process deleted and made again while sessions of this one still had it open
    (imaptest does that at each run while the previous run's sessions are still closing): their index
    connections are on the old file, and they give them back after a new view opened the new file. An
    APPEND handed one would write to the old file and tell the folder's shared state its stamp is
    known: the view would trust that stamp, read its own file and miss the message (no EXISTS)."""
    path = storage.root / ".Box"
    stale = storage.select("Box")  # a session of the previous run
    _in_child(storage.root, "st.delete('Box'); st.create('Box'); st.append('Box', b'Subject: a\\r\\n\\r\\nb\\r\\n')")
    box = storage.select("Box")
    assert list(box.uids) == [1]
    stale.close()  # its connection, on the old file, waits on the folder's state (``box`` uses it)
    assert len(box.folder.state.idle) == 1
    assert storage.append("Box", _msg(1)).uid_map == {0: 2}
    assert _rows(path / INDEX_FILE) == 2  # the APPEND went to the file that is the index now
    changes = box.refresh()
    assert changes.new_uids == [2] and list(box.uids) == [1, 2]
    assert _in_child(storage.root, "print(st.status('Box', ['MESSAGES'])['MESSAGES'])") == "2"
    box.close()


def test_a_current_schema_is_not_created_again(storage, monkeypatch) -> None:
    """Opening an index whose schema row is current runs no ``CREATE ... IF NOT EXISTS`` script (the
    statements SQLite runs are traced)."""
    path = storage.root / ".Box"
    traced: list[str] = []
    connect = sqlite3.connect

    def tracing(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        db = connect(*args, **kwargs)
        db.set_trace_callback(traced.append)
        return db

    monkeypatch.setattr(sqlite3, "connect", tracing)
    g = Folder(path)  # no other user: a connection of its own
    assert g.index.get_int("uidnext") == 2
    assert traced and not any("CREATE" in s for s in traced), traced
    g.close()
    traced.clear()
    (path / INDEX_FILE).unlink()
    for suffix in ("-wal", "-shm"):
        Path(str(path / INDEX_FILE) + suffix).unlink(missing_ok=True)
    h = Folder(path)  # a new file gets its tables
    assert any("CREATE TABLE IF NOT EXISTS msg" in s for s in traced)
    h.close()
