"""The signed hand-over of a proxied login: it proves the grant under the shared secret, once, nothing else."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

import pytest

from dovetail.mailauth import proxytoken, replays
from dovetail.mailauth.proxytoken import Grant
from dovetail.mailauth.replays import REPLAYS_FILE, MemoryReplays, SqliteReplays

SECRET = "0123456789abcdef-cluster"
GRANT = Grant("bob@acme.example", "203.0.113.7", 50123, 4)
NOW = 1_800_000_000.0


def test_a_token_proves_its_grant() -> None:
    token = proxytoken.sign(SECRET, GRANT, NOW)
    assert proxytoken.is_token(token)
    assert proxytoken.check(SECRET, GRANT, token, NOW + 30) is None
    assert proxytoken.check(SECRET, replace(GRANT, user="BOB@acme.example"), token, NOW) is None  # names: any case


def test_another_secret_or_an_altered_grant_is_refused() -> None:
    token = proxytoken.sign(SECRET, GRANT, NOW)
    mismatch = "proxy signature mismatch: cluster.secret differs between the nodes"
    assert proxytoken.check("another-secret-of-16+", GRANT, token, NOW) == mismatch
    altered_grants = (replace(GRANT, ttl=5), replace(GRANT, client_ip="198.51.100.1"),
                      replace(GRANT, user="eve@x.example"))
    for altered in altered_grants:
        assert proxytoken.check(SECRET, altered, token, NOW) == mismatch


def test_stale_malformed_and_secretless_tokens_are_refused() -> None:
    token = proxytoken.sign(SECRET, GRANT, NOW)
    assert proxytoken.check(SECRET, GRANT, token, NOW + 61).startswith("stale proxy token")
    assert proxytoken.check(SECRET, GRANT, proxytoken.PREFIX + "x:y", NOW) == "malformed proxy token"
    assert proxytoken.check("", GRANT, token, NOW).startswith("this node has no cluster.secret")
    assert not proxytoken.is_token("an ordinary password")


def test_a_token_is_accepted_once_by_all_the_workers_of_a_node(tmp_path: Path) -> None:
    first, second = SqliteReplays(tmp_path / REPLAYS_FILE), SqliteReplays(tmp_path / REPLAYS_FILE)  # two workers
    now = time.time()
    token = proxytoken.sign(SECRET, GRANT, now)
    assert proxytoken.check(SECRET, GRANT, token, now, replays=first) is None
    used = "proxy token used before: a replayed login"
    assert proxytoken.check(SECRET, GRANT, token, now + 1, replays=second) == used
    assert proxytoken.check(SECRET, GRANT, token, now + 2, replays=first) == used
    # A token that fails its signature is not remembered: it cannot use up a genuine one's place.
    other = proxytoken.sign(SECRET, GRANT, now)
    assert proxytoken.check(SECRET, replace(GRANT, ttl=1), other, now, replays=first) is not None
    assert proxytoken.check(SECRET, GRANT, other, now, replays=second) is None
    memory = MemoryReplays()
    assert proxytoken.check(SECRET, GRANT, token, now, replays=memory) is None
    assert proxytoken.check(SECRET, GRANT, token, now, replays=memory) == used
    assert os.stat(tmp_path / REPLAYS_FILE).st_mode & 0o077 == 0  # client addresses: the service user's alone


def test_expired_tokens_are_swept_from_the_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replays, "PRUNE_EVERY", 2)
    record = SqliteReplays(tmp_path / REPLAYS_FILE)
    assert record.first_use("expired", time.time() - 1)
    assert record.first_use("fresh", time.time() + 60)  # the second use sweeps
    assert [k for (k,) in record.db.execute("SELECT key FROM used")] == ["fresh"]
    assert not record.first_use("fresh", time.time() + 60)


def test_the_memory_record_sweeps_without_forgetting_live_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replays, "PRUNE_EVERY", 4)
    record = MemoryReplays()
    live = time.time() + 60
    for n in range(50):  # far more live tokens than PRUNE_EVERY: each sweep keeps them all
        assert record.first_use(f"live-{n}", live)
    assert all(not record.first_use(f"live-{n}", live) for n in range(50))
    sweeps_at = record._sweep_at
    assert sweeps_at >= 50  # the next sweep waits for the record to grow, not for every login
    for n in range(sweeps_at):
        record.first_use(f"old-{n}", time.time() - 1)
    assert len(record._used) < sweeps_at + 50  # expired tokens went at the sweep
    assert not record.first_use("live-0", live)
