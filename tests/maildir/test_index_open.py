"""Opening a mailbox's index: a file another connection holds locked is waited for and kept, never
taken for a corrupt one and deleted (deleting ``-shm`` under a live connection corrupts the index);
a corrupt file or one of an unknown schema is made anew."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from dovetail.maildir import index as index_mod
from dovetail.maildir.index import INDEX_FILE, Index


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A folder whose index holds a marker row: it is gone when the file was made anew."""
    index = Index(tmp_path)
    index.set_meta("marker", "kept")
    index.db.close()
    return tmp_path


@pytest.fixture
def holder(folder: Path) -> Iterator[sqlite3.Connection]:
    """Another connection holding the index's file locked exclusively (as one that creates the file or
    converts it to WAL does for a moment)."""
    db = sqlite3.connect(folder / INDEX_FILE, isolation_level=None, timeout=0)
    db.execute("PRAGMA locking_mode=EXCLUSIVE")
    db.execute("BEGIN EXCLUSIVE")
    yield db
    db.close()


def test_a_locked_index_is_not_deleted(folder: Path, holder: sqlite3.Connection,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_mod, "OPEN_DEADLINE", 0.05)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        Index(folder)
    holder.close()
    assert Index(folder).get_meta("marker") == "kept"


def test_a_locked_index_is_opened_once_the_lock_goes(folder: Path, holder: sqlite3.Connection,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_mod, "OPEN_DEADLINE", 5.0)
    monkeypatch.setattr(sqlite3, "connect", _short_busy_wait(sqlite3.connect))
    pauses: list[float] = []

    def pause(seconds: float) -> None:  # the open's wait between tries: the other connection lets go
        pauses.append(seconds)
        holder.close()

    monkeypatch.setattr(index_mod.time, "sleep", pause)
    assert Index(folder).get_meta("marker") == "kept"
    assert pauses, "the open never met the lock"


def _short_busy_wait(connect):  # type: ignore[no-untyped-def]
    """sqlite3.connect with a busy handler that gives up at once, so the open's own retry is what waits."""
    def wrapped(*args, **kwargs):  # type: ignore[no-untyped-def]
        kwargs["timeout"] = 0
        return connect(*args, **kwargs)
    return wrapped


@pytest.mark.parametrize("content", [b"this is not a database" * 100, b"SQLite format 3\x00" + b"\xff" * 4080])
def test_a_corrupt_index_is_made_anew(folder: Path, content: bytes) -> None:
    for suffix in ("-wal", "-shm"):
        Path(str(folder / INDEX_FILE) + suffix).unlink(missing_ok=True)
    (folder / INDEX_FILE).write_bytes(content)
    index = Index(folder)
    assert index.get_meta("marker") is None
    assert index.get_meta("schema") == str(index_mod.SCHEMA_VERSION)


def test_an_index_of_an_unknown_schema_is_made_anew(folder: Path) -> None:
    db = sqlite3.connect(folder / INDEX_FILE, isolation_level=None)
    db.execute("UPDATE meta SET value='99' WHERE key='schema'")
    db.close()
    index = Index(folder)
    assert index.get_meta("marker") is None
    assert index.get_meta("schema") == str(index_mod.SCHEMA_VERSION)
