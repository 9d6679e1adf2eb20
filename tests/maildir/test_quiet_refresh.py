"""``refresh_if_quiet``: the IMAP server skips the thread of a refresh when a few stats and the index's
commit counter say nothing changed, so it must never say "quiet" when a refresh would find something."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from dovetail.maildir import folder as folder_mod
from dovetail.maildir.index import INDEX_FILE
from dovetail.storage import open_storage
from dovetail.storage.api import FLAGGED, SEEN, StoreMode

MSG = b"From: Alice <alice@example.org>\nSubject: hello %d\n\nbody\n"


def deliver(root: Path, n: int) -> None:
    name = f"{1700000000 + n}.V801I{n:x}M{n}.mx.example"
    (root / "tmp" / name).write_bytes(MSG % n)
    os.rename(root / "tmp" / name, root / "new" / name)


@pytest.fixture
def storage(tmp_path: Path):
    st = open_storage(tmp_path / "Maildir")
    for n in range(4):
        deliver(st.root, n)
    return st


def test_quiet_until_another_view_changes_flags(storage, clock) -> None:
    a = storage.select("INBOX")
    b = storage.select("INBOX")
    assert a.refresh_if_quiet() is not None  # nothing happened since the select
    b.store_flags([b.uids[0]], StoreMode.ADD, [FLAGGED])
    assert a.refresh_if_quiet() is None
    assert [c.uid for c in a.refresh().flag_changes] == [b.uids[0]]
    quiet = a.refresh_if_quiet()
    assert quiet is not None and not quiet.flag_changes and not quiet.new_uids


def test_not_quiet_after_its_own_change_or_a_delivery(storage, clock) -> None:
    a = storage.select("INBOX")
    a.store_flags([a.uids[1]], StoreMode.ADD, [SEEN])
    assert a.refresh_if_quiet() is None  # its own index write: a refresh takes it in
    a.refresh()
    assert a.refresh_if_quiet() is not None
    deliver(storage.root, 9)  # another writer, not through the index
    assert a.refresh_if_quiet() is None
    assert len(a.refresh().new_uids) == 1
    assert a.refresh_if_quiet() is not None


def test_a_commit_that_moves_no_modseq_keeps_it_quiet(storage, clock) -> None:
    a = storage.select("INBOX")
    other = sqlite3.connect(storage.root / INDEX_FILE)
    with other:
        other.execute("INSERT OR REPLACE INTO meta VALUES ('test-note', '1')")
    assert a.refresh_if_quiet() is not None
    with other:
        other.execute("UPDATE meta SET value=CAST(value AS INTEGER)+1 WHERE key='highestmodseq'")
    other.close()
    assert a.refresh_if_quiet() is None


def test_a_dirty_stamp_is_not_trusted_once_its_window_passed(storage, clock) -> None:
    a = storage.select("INBOX")
    assert a.refresh_if_quiet() is not None
    clock[0] += 5  # the directories were changed within the clock tick of the listing: list again
    assert a.refresh_if_quiet() is None
    a.refresh()
    assert a.refresh_if_quiet() is not None


def test_pending_expunges_are_never_quiet(storage, clock) -> None:
    a = storage.select("INBOX")
    b = storage.select("INBOX")
    gone = b.uids[0]
    b.store_flags([gone], StoreMode.ADD, ["\\Deleted"])
    b.expunge([gone])
    a.refresh(allow_expunges=False)  # FETCH: the expunge waits
    assert a.refresh_if_quiet() is None
    assert a.refresh().expunged_uids == [gone]


def age(root: Path, seconds: float = 60.0) -> None:
    """Give the stamped directories and files an old time, so the listing that follows confirms a
    clean stamp (no change can hide behind it): the quiet check then reads no ``data_version``."""
    then = folder_mod.time.time() - seconds
    for name in ("cur", "new", "dovecot-uidlist", "dovecot-keywords"):
        if (root / name).exists():
            os.utime(root / name, (then, then))


def clean_view(storage):
    view = storage.select("INBOX")
    age(storage.root)
    view.command_started()
    view.refresh()  # the stamp moved (older): listed again, now clean
    assert view._quiet is not None and view._quiet[4] == float("inf")
    assert view.refresh_if_quiet() is not None
    return view


CHILD_STORE = """
import sys
from dovetail.storage import open_storage
view = open_storage(sys.argv[1]).select("INBOX")
view.store_flags([int(sys.argv[2])], __import__("dovetail.storage.api", fromlist=["x"]).StoreMode.ADD, ["\\\\Flagged"])
view.close()
"""


def command(view):
    """What the IMAP server does after a command: the quiet check, else a refresh."""
    view.command_started()
    quiet = view.refresh_if_quiet()
    return quiet if quiet is not None else view.refresh()


def test_a_clean_stamp_sees_another_process_store(storage, clock) -> None:
    a = clean_view(storage)
    uid = a.uids[2]
    subprocess.run([sys.executable, "-c", CHILD_STORE, str(storage.root), str(uid)], check=True, timeout=30)
    changes = command(a)
    assert [(c.uid, FLAGGED in c.flags) for c in changes.flag_changes] == [(uid, True)]
    assert command(a).flag_changes == []


def test_a_clean_stamp_sees_a_foreign_rename_and_a_delivery(storage, clock) -> None:
    a = clean_view(storage)
    b = storage.select("INBOX")
    uid = a.uids[1]
    name = b.folder.index.db.execute("SELECT filename FROM msg WHERE uid=?", (uid,)).fetchone()[0]
    os.rename(storage.root / name, storage.root / (name.split(":")[0] + ":2,S"))  # Dovecot sets \Seen
    assert [(c.uid, SEEN in c.flags) for c in command(a).flag_changes] == [(uid, True)]
    age(storage.root)
    command(a)
    assert a.refresh_if_quiet() is not None  # clean again
    deliver(storage.root, 7)  # Postfix/LMTP into new/
    assert len(command(a).new_uids) == 1


def test_a_stamp_taken_before_the_command_is_not_used_by_its_refresh(storage, clock) -> None:
    a = clean_view(storage)  # its quiet check took a stamp
    name = next((storage.root / "cur").iterdir()).name
    os.rename(storage.root / "cur" / name, storage.root / "cur" / (name.split(":")[0] + ":2,F"))
    a.command_started()  # a STORE, say: no quiet check before its refresh
    assert len(a.refresh().flag_changes) == 1


def test_a_same_tick_commit_behind_a_dirty_stamp_is_seen(storage, clock) -> None:
    a = storage.select("INBOX")
    assert a._quiet is not None and a._quiet[4] != float("inf")  # just delivered: dirty
    assert a.refresh_if_quiet() is not None
    cur = os.stat(storage.root / "cur")
    uid = a.uids[0]
    subprocess.run([sys.executable, "-c", CHILD_STORE, str(storage.root), str(uid)], check=True, timeout=30)
    os.utime(storage.root / "cur", ns=(cur.st_atime_ns, cur.st_mtime_ns))  # as if in the same clock tick
    assert folder_mod.stamp_of(a.folder._stamp_paths) == a._quiet[0]
    assert a.refresh_if_quiet() is None  # data_version moved, and the modseq with it
    assert [c.uid for c in a.refresh().flag_changes] == [uid]
