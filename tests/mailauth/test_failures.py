"""Failed logins counted across worker processes: one ledger file, real processes, real servers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dovetail.mailauth.failures import LEDGER_FILE, SqliteLedger, shared_penalty
from dovetail.mailauth.penalty import AuthPenalty, MemoryLedger


def test_two_penalties_on_one_ledger_count_together(tmp_path: Path) -> None:
    a = shared_penalty(tmp_path, lockout=4)
    b = shared_penalty(tmp_path, lockout=4)
    assert isinstance(a.ledger, SqliteLedger) and a.ledger is not b.ledger
    a.record_failure("alice", "192.0.2.1")
    b.record_failure("alice", "192.0.2.2")
    a.record_failure("alice", "192.0.2.3")
    assert a.failures("alice", "192.0.2.9") == 3 and b.failures("Alice", "192.0.2.9") == 3
    assert b.record_failure("alice", "192.0.2.4") == pytest.approx(min(15.0, 0.2 * 2**3))
    assert a.blocked("alice", "198.51.100.1") and b.blocked("alice", "198.51.100.1")  # per user
    assert b.blocked("bob", "192.0.2.1") is False
    b.record_success("alice", "192.0.2.1")  # a good login clears the user's count for every worker
    assert not a.blocked("alice", "198.51.100.1") and a.failures("alice", "198.51.100.1") == 0
    for name in (LEDGER_FILE, LEDGER_FILE + "-wal"):  # user names and addresses: the service user's alone
        assert os.stat(tmp_path / name).st_mode & 0o077 == 0


def test_failures_age_out_of_the_shared_ledger(tmp_path: Path) -> None:
    now = [1000.0]
    p = AuthPenalty(lockout=2, window=60.0, clock=lambda: now[0], ledger=SqliteLedger(tmp_path / LEDGER_FILE, 60.0))
    p.record_failure("carol", "192.0.2.7")
    p.record_failure("carol", "192.0.2.7")
    assert p.blocked("carol", "192.0.2.7")
    now[0] += 61
    assert not p.blocked("carol", "192.0.2.7")


def test_failures_recorded_by_another_process_count_here(tmp_path: Path) -> None:
    code = ("import sys; from dovetail.mailauth.failures import shared_penalty; "
            "p = shared_penalty(sys.argv[1], lockout=3); [p.record_failure('dave', '203.0.113.5') for _ in range(3)]")
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, timeout=60)
    here = shared_penalty(tmp_path, lockout=3)
    assert here.failures("dave", "203.0.113.5") == 3 and here.blocked("dave", "192.0.2.1")


def test_an_unusable_ledger_falls_back_to_memory(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir"
    p = shared_penalty(missing)
    assert isinstance(p.ledger, MemoryLedger)
    p.record_failure("erin", "192.0.2.8")
    assert p.failures("erin", "192.0.2.8") == 1
    assert not os.path.exists(missing)
