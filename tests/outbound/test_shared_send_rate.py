"""The per-minute send limit of a PostgreSQL cluster is one budget for every process and node."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dovetail.db import make_engine
from dovetail.outbound.limits import SendLimiter

from .conftest import make_world

MINUTE = 29_000_000 * 60.0  # a fixed UTC minute: every process counts in the same window

WORKER = """
import sys, threading
from dovetail.db import make_engine
from dovetail.outbound.limits import SendLimiter
limiter = SendLimiter(make_engine(sys.argv[1]), clock=lambda: float(sys.argv[2]))
results = []
def send():
    for _ in range(10):
        results.append(limiter.consume("acme", 1))
threads = [threading.Thread(target=send) for _ in range(4)]
sys.stdin.readline()  # both processes start sending together
for t in threads: t.start()
for t in threads: t.join()
print(sum(r is None for r in results), sum(r is not None and r.kind == "rate" for r in results))
"""


@pytest.fixture
def cluster_url(tmp_path: Path, pg_cluster: object) -> str:
    url = pg_cluster.new_database()  # type: ignore[attr-defined]
    world = make_world(tmp_path / "data", url)
    SendLimiter(world.engine).set_limits("acme", per_minute=25)
    world.engine.dispose()
    return url


def test_two_processes_share_one_budget_per_minute(cluster_url: str) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, cluster_url, str(MINUTE + i)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate("go\n", timeout=120)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    accepted = sum(int(o[0]) for o in outs)
    refused = sum(int(o[1]) for o in outs)
    assert accepted == 25 and refused == 80 - 25  # one budget of 25, not 25 per process
    # Any process sees it spent; the next minute brings a fresh budget.
    engine = make_engine(cluster_url)
    try:
        limiter = SendLimiter(engine, clock=lambda: MINUTE + 30)
        refused_now = limiter.check("acme")
        assert refused_now is not None and refused_now.kind == "rate"
        later = SendLimiter(engine, clock=lambda: MINUTE + 60)
        assert later.check("acme") is None and later.consume("acme", 1) is None
    finally:
        engine.dispose()
