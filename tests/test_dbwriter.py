"""Writers of one SQLite file queue for its write lock across processes, and a role has one holder."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import sqlalchemy as sa

from dovetail.db import make_engine
from dovetail.dbwriter import take_role, write_transaction

ROUNDS = 150


def _count(path: Path) -> int:
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            return int(conn.exec_driver_sql("SELECT n FROM counter").scalar_one())
    finally:
        engine.dispose()


def _increment(path: Path, rounds: int) -> None:
    """Read, then write: the pattern whose deferred BEGIN fails with SQLITE_BUSY when another process
    commits in between. With no busy handler at all, any race surfaces as an error."""
    engine = make_engine(f"sqlite:///{path}")

    @sa.event.listens_for(engine, "connect")
    def _no_busy_handler(dbapi_conn, _record) -> None:  # noqa: ANN001
        dbapi_conn.execute("PRAGMA busy_timeout=0")

    for _ in range(rounds):
        with write_transaction(engine) as conn:
            n = conn.exec_driver_sql("SELECT n FROM counter").scalar_one()
            conn.exec_driver_sql("UPDATE counter SET n = ?", (n + 1,))
    engine.dispose()


def _fork(fn, *args) -> int:  # noqa: ANN001
    pid = os.fork()
    if pid == 0:  # the child reports through its exit status only
        try:
            fn(*args)
        except BaseException:  # noqa: BLE001
            os._exit(1)
        os._exit(0)
    return pid


def test_writers_in_several_processes_queue_instead_of_failing(tmp_path: Path) -> None:
    path = tmp_path / "d.db"
    engine = make_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE counter (n INTEGER)")
        conn.exec_driver_sql("INSERT INTO counter VALUES (0)")
    engine.dispose()
    children = [_fork(_increment, path, ROUNDS) for _ in range(3)]
    statuses = [os.waitpid(pid, 0)[1] for pid in children]
    assert [os.waitstatus_to_exitcode(s) for s in statuses] == [0, 0, 0]
    assert _count(path) == 3 * ROUNDS  # no update lost, none failed with "database is locked"


def test_a_role_has_one_holder_and_a_killed_holder_lets_go(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'd.db'}")
    first = take_role(engine, "dispatcher")
    assert first is not None
    assert take_role(engine, "dispatcher") is None  # a second holder, even in the same process, waits
    first.release()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        role = take_role(engine, "dispatcher")
        os.write(write, b"1" if role is not None else b"0")
        signal.pause()  # held until killed
        os._exit(0)
    os.close(write)
    assert os.read(read, 1) == b"1"
    assert take_role(engine, "dispatcher") is None
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    again = take_role(engine, "dispatcher")
    assert again is not None
    again.release()
    engine.dispose()


def test_a_durable_transaction_commits_at_full_safety_and_leaves_the_connection_as_it_was(tmp_path: Path) -> None:
    """``durable=True`` commits with ``synchronous=FULL`` (the log fsynced before the commit returns); the
    pooled connection gets its own level back, after a commit and after a failure alike."""
    engine = make_engine(f"sqlite:///{tmp_path / 'd.db'}")
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE t (n INTEGER)")
        with write_transaction(engine, durable=True) as conn:
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
            conn.exec_driver_sql("INSERT INTO t VALUES (1)")
        try:
            with write_transaction(engine, durable=True) as conn:
                conn.exec_driver_sql("INSERT INTO t VALUES (2)")
                raise RuntimeError("half-way")
        except RuntimeError:
            pass
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL, as make_engine sets it
            assert [r[0] for r in conn.exec_driver_sql("SELECT n FROM t")] == [1]
        with write_transaction(engine) as conn:
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1
    finally:
        engine.dispose()
