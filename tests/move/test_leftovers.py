"""What moves leave for the operator, on a real SQLite directory: an unfinished move is one warning at
start with the command that carries it on; set-aside copies of finished moves are purged by age only."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from dovetail.config import Config
from dovetail.db import make_engine, migrate
from dovetail.directory import Directory
from dovetail.directory.moves import MoveStore
from dovetail.directory.nodes import NodeStore
from dovetail.move.purge import purge_moved
from dovetail.serve import warn_pending_moves


@pytest.fixture
def moves(tmp_path: Path) -> MoveStore:
    engine = make_engine(f"sqlite:///{tmp_path / 'dovetail.db'}")
    migrate(engine)
    nodes = NodeStore(engine)
    nodes.add("a", "mailbox", lmtp="127.0.0.2:24", transfer="127.0.0.2:8026")
    nodes.add("b", "mailbox", lmtp="127.0.0.3:24", transfer="127.0.0.3:8026")
    for tenant in ("acme", "globex"):
        Directory(engine).tenant_add(tenant, node="a")
    return MoveStore(engine)


def test_an_unfinished_move_is_a_warning_at_start_with_the_command_that_resumes_it(
        moves: MoveStore, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    moves.pause(moves.begin("acme", "a", "b"))  # killed in its final sync: the tenant stays paused
    cfg = Config(data_dir=Path("."), values={"node.name": "b"})
    warn_pending_moves(cfg, moves.engine)
    # the log line goes to stderr, and to the stdlib handlers that are attached (which depends on the run)
    logged = capfd.readouterr().err.splitlines() + [r.getMessage() for r in caplog.records]
    [line, *_] = [ln for ln in logged if "tenant acme" in ln]
    assert "dovetail/master" in line and "warning" in line
    assert "stopped at final-sync" in line and "PAUSED" in line
    assert "resume it on this node with `dovetail tenant move acme --to b`" in line and "--abort" in line


def test_purge_removes_only_old_copies_of_finished_moves(moves: MoveStore, tmp_path: Path) -> None:
    mail = tmp_path / "mail"
    done = moves.cleaned(moves.switch(moves.pause(moves.begin("acme", "a", "b"))), "")
    running = moves.begin("globex", "a", "b")
    for name in (f"acme.{done.id}", f"globex.{running.id}", "notes"):
        (mail / ".moved-away" / name / "new").mkdir(parents=True)
        (mail / ".moved-away" / name / "new" / "1").write_bytes(b"x" * 10)
    (mail / "acme").mkdir()  # the live folder of a tenant moved back later is never touched

    removed, kept = purge_moved(mail, moves, older_than_days=7)
    assert removed == [] and sorted(k.tenant for k in kept) == ["acme", "globex"]
    removed, kept = purge_moved(mail, moves, older_than_days=7, now=time.time() + 8 * 86400)
    assert [(r.tenant, r.size) for r in removed] == [("acme", 10)] and [k.tenant for k in kept] == ["globex"]
    assert not (mail / ".moved-away" / f"acme.{done.id}").exists()
    assert (mail / ".moved-away" / f"globex.{running.id}").is_dir() and (mail / ".moved-away" / "notes").is_dir()
    assert (mail / "acme").is_dir()
