"""The shared run files: a write holds the writers' lock file, so writers of two processes wait for each
other in the kernel (woken when the holder lets go) and never in SQLite's sleeping busy handler."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dovetail.mailauth.slots import SharedSlots
from dovetail.rundb import open_run_db, writing

SCHEMA = "CREATE TABLE IF NOT EXISTS t (n INTEGER);"


def test_a_write_holds_the_writers_lock(tmp_path: Path) -> None:
    db = open_run_db(tmp_path / "x.sqlite", SCHEMA)
    other = os.open(tmp_path / "x.sqlite.lock", os.O_RDWR)
    try:
        with writing(db):
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # let go after the commit
        fcntl.flock(other, fcntl.LOCK_UN)
        with pytest.raises(ZeroDivisionError), writing(db) as w:  # and after a rollback
            w.execute("INSERT INTO t VALUES (1)")
            raise ZeroDivisionError
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert db.execute("SELECT count(*) FROM t").fetchone()[0] == 0
    finally:
        os.close(other)
        db.close()
    assert os.stat(tmp_path / "x.sqlite.lock").st_mode & 0o077 == 0


TAKER = """
import sys
from dovetail.mailauth.slots import SharedSlots
slots = SharedSlots(sys.argv[1])
slots.db.execute("PRAGMA busy_timeout=0")  # SQLite's lock busy would fail the write at once
print("ready", flush=True)
sys.stdin.readline()
print(sum(slots.acquire("u:bob", 150) for _ in range(200)), flush=True)
sys.stdin.readline()
"""


def test_two_processes_taking_slots_at_once_share_one_limit_without_busy_waits(tmp_path: Path) -> None:
    path = tmp_path / "connections-imapd.sqlite"
    child = subprocess.Popen([sys.executable, "-c", TAKER, str(path)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "ready"
        here = SharedSlots(path)
        here.db.execute("PRAGMA busy_timeout=0")
        child.stdin.write("go\n")
        child.stdin.flush()
        taken_here = sum(here.acquire("u:bob", 150) for _ in range(200))
        taken_there = int(child.stdout.readline())
        assert taken_here + taken_there == 150  # the limit held across both, and no write raised "locked"
        assert here.db.execute("SELECT sum(n) FROM slot WHERE key='u:bob'").fetchone()[0] == 150
        child.stdin.write("done\n")
        child.stdin.flush()
        assert child.wait(60) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
