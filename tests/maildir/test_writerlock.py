"""The index's writer lock: writers of one index (connections of one process or of two) take it around
their write transactions, a waiter goes on once it is let go, and without a usable lock file the index
is written as before (SQLite's own lock keeps writers apart)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

from dovetail.maildir.index import Index
from dovetail.maildir.writerlock import LOCK_SUFFIX, WriterLock

HOLD = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.readline()
"""


def _folder(tmp_path: Path) -> Path:
    for sub in ("cur", "new", "tmp"):
        (tmp_path / sub).mkdir(parents=True, exist_ok=True)
    return tmp_path


def test_a_second_writer_waits_for_the_first_to_commit(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    first, second = Index(folder), Index(folder)
    try:
        first.begin()
        first.set_meta("who", "first")
        order: list[str] = []
        began = threading.Event()

        def other() -> None:
            second.begin()
            order.append("second began")
            began.set()
            second.set_meta("who", "second")
            second.commit()

        t = threading.Thread(target=other)
        t.start()
        # The second writer cannot get in while the first holds the lock: it is still waiting when
        # the first commits (the join would pass at once if it had not waited).
        assert not began.wait(0.2)
        order.append("first committed")
        first.commit()
        t.join(10)
        assert order == ["first committed", "second began"]
        assert Index(folder).get_meta("who") == "second"
    finally:
        first.close()
        second.close()


def test_waiting_for_writers_returns_once_another_process_lets_go(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    idx = Index(folder)
    lock_path = f"{idx.path}{LOCK_SUFFIX}"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, lock_path], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        # Held elsewhere: a short wait gives up, exclusive and shared alike.
        probe = WriterLock(idx.path)
        assert not probe.acquire(timeout=0.05)
        assert not probe.acquire(shared=True, timeout=0.05)
        probe.close()
        done = threading.Event()
        t = threading.Thread(target=lambda: (idx.db.wait_for_writers() and done.set()))
        t.start()
        assert not done.wait(0.2)
        assert holder.stdin is not None
        holder.stdin.write("go\n")
        holder.stdin.flush()
        t.join(10)
        assert done.is_set()
    finally:
        holder.kill()
        holder.wait()
        idx.close()


def test_a_writer_stuck_past_the_deadline_fails_the_wait_once(tmp_path: Path) -> None:
    """The shared wait gives up at its deadline and says so; it does not go on to wait for the
    exclusive lock and SQLite's busy handler, each with a deadline of its own."""
    folder = _folder(tmp_path)
    idx = Index(folder)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, f"{idx.path}{LOCK_SUFFIX}"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        assert idx.db.wait_for_writers(timeout=0.2) is False
        assert time.monotonic() - started < 5  # not the 30 s of the exclusive lock's own wait
        assert not idx.db.conn.in_transaction
    finally:
        holder.kill()
        holder.wait()
        idx.close()


def test_shared_waiters_do_not_queue_behind_each_other(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    idx = Index(folder)
    a, b = WriterLock(idx.path), WriterLock(idx.path)
    try:
        assert a.acquire(shared=True, timeout=0)
        assert b.acquire(shared=True, timeout=0)  # a second shared holder is let in at once
        writer = WriterLock(idx.path)
        assert not writer.acquire(timeout=0.02)  # but a writer waits for both
        a.release()
        b.release()
        assert writer.acquire(timeout=0)
        writer.close()
    finally:
        a.close()
        b.close()
        idx.close()


def test_without_a_usable_lock_file_the_index_is_written_as_before(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    idx = Index(folder)
    (Path(f"{idx.path}{LOCK_SUFFIX}")).mkdir()  # cannot be opened as the lock file
    try:
        idx.begin()
        idx.set_meta("k", "v")
        idx.commit()
        assert idx.db.wait_for_writers()
        assert Index(folder).get_meta("k") == "v"
    finally:
        idx.close()


def test_a_rolled_back_or_failed_write_lets_go_of_the_lock(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    idx = Index(folder)
    try:
        idx.begin()
        idx.rollback()
        probe = WriterLock(idx.path)
        assert probe.acquire(timeout=0)
        probe.release()
        idx.begin()
        try:
            idx.db.execute("INSERT INTO no_such_table VALUES (1)")
        except Exception:
            idx.rollback()
        assert probe.acquire(timeout=0)
        probe.close()
    finally:
        idx.close()
