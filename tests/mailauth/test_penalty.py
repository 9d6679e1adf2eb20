"""The auth penalty on its own clock: delays double per failure, a lockout per user and per IP, ageing out."""

from __future__ import annotations

from dovetail.mailauth.penalty import AuthPenalty


def test_penalty_grows_then_locks():
    now = [0.0]
    p = AuthPenalty(base_delay=1.0, max_delay=8.0, lockout=5, window=60.0, clock=lambda: now[0])
    delays = [p.record_failure("alice", "10.0.0.1") for _ in range(4)]
    assert delays == [1.0, 2.0, 4.0, 8.0]
    assert not p.blocked("alice", "10.0.0.2")
    p.record_failure("alice", "10.0.0.1")
    assert p.blocked("alice", "10.0.0.9")  # per user
    assert p.blocked("someone", "10.0.0.1")  # per IP
    assert not p.blocked("bob", "10.0.0.2")
    now[0] = 61.0
    assert not p.blocked("alice", "10.0.0.1")  # failures age out
    p.record_failure("bob", "10.0.0.3")
    p.record_success("bob", "10.0.0.3")
    assert p.failures("bob", "10.0.0.3") == 0
