"""Connection slots shared by worker processes: limits across processes, slots of dead workers freed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dovetail.mailauth.slots import MemorySlots, SharedSlots, shared_slots


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_memory_slots() -> None:
    s = MemorySlots()
    assert s.acquire("ip:a", 2) and s.acquire("ip:a", 2) and not s.acquire("ip:a", 2)
    s.release("ip:a")
    assert s.acquire("ip:a", 2)


def test_workers_share_one_count(tmp_path: Path) -> None:
    a = SharedSlots(tmp_path / "s.sqlite", pid=os.getpid())
    b = SharedSlots(tmp_path / "s.sqlite", pid=os.getppid())
    assert a.acquire("u:bob", 2) and b.acquire("u:bob", 2)
    assert not a.acquire("u:bob", 2) and not b.acquire("u:bob", 2)
    assert a.acquire("u:carol", 2)  # another key has its own count
    b.release("u:bob")
    assert a.acquire("u:bob", 2)
    assert os.stat(tmp_path / "s.sqlite").st_mode & 0o077 == 0


def test_slots_of_a_dead_worker_are_freed(tmp_path: Path) -> None:
    gone = SharedSlots(tmp_path / "s.sqlite", pid=dead_pid())  # a worker that crashed holding slots
    assert gone.acquire("ip:192.0.2.1", 2) and gone.acquire("ip:192.0.2.1", 2)
    live = SharedSlots(tmp_path / "s.sqlite", pid=os.getpid())  # a worker starting forgets them
    assert live.acquire("ip:192.0.2.1", 2) and live.acquire("ip:192.0.2.1", 2)
    assert not live.acquire("ip:192.0.2.1", 2)


def test_a_full_key_checks_for_dead_holders(tmp_path: Path) -> None:
    live = SharedSlots(tmp_path / "s.sqlite", pid=os.getpid())
    gone = SharedSlots(tmp_path / "s.sqlite", pid=dead_pid())  # died after the live worker started
    assert gone.acquire("u:dave", 1)
    assert live.acquire("u:dave", 1)  # full, but its holder is dead: freed and taken


def test_an_unusable_file_counts_per_process(tmp_path: Path) -> None:
    slots = shared_slots(tmp_path / "missing" / "dir", "imapd")
    assert isinstance(slots, MemorySlots) and slots.acquire("k", 1) and not slots.acquire("k", 1)


def test_release_gives_back_several_keys_in_one_call(tmp_path: Path) -> None:
    shared = SharedSlots(tmp_path / "s.sqlite")
    for slots in (shared, MemorySlots()):
        assert slots.acquire("ip:192.0.2.1", 1) and slots.acquire("u:erin", 1) and slots.acquire("u:erin", 2)
        slots.release("ip:192.0.2.1", "u:erin")
        assert slots.acquire("ip:192.0.2.1", 1) and not slots.acquire("u:erin", 1)  # one of erin's two left
        slots.release("ip:192.0.2.1", "u:erin")
        assert slots.acquire("u:erin", 2) and slots.acquire("u:erin", 2)
        slots.release("u:erin", "u:erin")  # the same key twice: two slots back
        assert slots.acquire("u:erin", 2) and slots.acquire("u:erin", 2) and not slots.acquire("u:erin", 2)
        slots.release("u:erin", "u:erin")
    assert shared.db.execute("SELECT count(*) FROM slot").fetchone()[0] == 0
