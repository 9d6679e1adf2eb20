"""Login failures and connection slots counted for a whole cluster in its PostgreSQL database."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from dovetail.db import make_engine, migrate
from dovetail.mailauth.cluster import DbLedger, DbSlots, counted_slots, forget_node, shares_counters
from dovetail.mailauth.failures import SqliteLedger, shared_penalty
from dovetail.mailauth.slots import SharedSlots


@pytest.fixture
def pg_engine(pg_cluster: object) -> Iterator[Engine]:
    engine = make_engine(pg_cluster.new_database())  # type: ignore[attr-defined]
    migrate(engine)
    yield engine
    engine.dispose()


def test_failures_on_one_node_lock_the_login_out_on_another(pg_engine: Engine, tmp_path: Path) -> None:
    node_a = shared_penalty(tmp_path / "a", lockout=3, window=300, engine=pg_engine)
    node_b = shared_penalty(tmp_path / "b", lockout=3, window=300, engine=pg_engine)
    assert isinstance(node_a.ledger, DbLedger)
    for _ in range(2):
        node_a.record_failure("bob@acme.example", "192.0.2.7")
    node_b.record_failure("bob@acme.example", "198.51.100.1")
    assert node_b.failures("bob@acme.example", "203.0.113.9") == 3
    assert node_a.blocked("bob@acme.example", "203.0.113.9")
    node_b.record_success("bob@acme.example", "198.51.100.1")
    assert not node_a.blocked("bob@acme.example", "203.0.113.9")


def test_a_user_gets_one_allowance_of_connections_for_the_cluster(pg_engine: Engine) -> None:
    node_a = DbSlots(pg_engine, "imapd", "node-a")
    node_b = DbSlots(pg_engine, "imapd", "node-b", pid=node_a.pid)  # the same pid number on another machine
    assert node_a.acquire("user:bob", 3) and node_b.acquire("user:bob", 3) and node_a.acquire("user:bob", 3)
    assert not node_b.acquire("user:bob", 3)
    assert node_b.acquire("user:ann", 3)  # other keys and services are apart
    assert node_b.acquire("user:odd\0name", 1)  # a NUL in a name is stored, not an error
    assert DbSlots(pg_engine, "submission", "node-b").acquire("user:bob", 1)
    node_a.release("user:bob")
    assert node_b.acquire("user:bob", 3)
    node_b.close()  # a clean stop gives back all it held
    assert node_a.acquire("user:bob", 3) and node_a.acquire("user:bob", 3)
    assert not node_a.acquire("user:bob", 3)
    assert forget_node(pg_engine, "node-a") == 1
    assert node_b.acquire("user:bob", 1)


def test_slots_of_a_dead_worker_come_back_on_its_node(pg_engine: Engine) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone_pid = int(dead.stdout)
    crashed = DbSlots(pg_engine, "imapd", "node-a", pid=gone_pid)
    assert crashed.acquire("ip:192.0.2.1", 2) and crashed.acquire("ip:192.0.2.1", 2)
    elsewhere = DbSlots(pg_engine, "imapd", "node-b")
    assert not elsewhere.acquire("ip:192.0.2.1", 2)  # node B cannot tell whether A's pid lives
    live = DbSlots(pg_engine, "imapd", "node-a")  # a new worker on node A clears A's dead pids
    assert live.pid == os.getpid()
    assert elsewhere.acquire("ip:192.0.2.1", 2) and live.acquire("ip:192.0.2.1", 2)


def test_one_machine_keeps_its_run_files(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'd.db'}")
    assert not shares_counters(engine) and not shares_counters(None)
    assert isinstance(shared_penalty(tmp_path, engine=engine).ledger, SqliteLedger)
    assert isinstance(counted_slots(tmp_path, "imapd", engine=engine), SharedSlots)
    engine.dispose()
