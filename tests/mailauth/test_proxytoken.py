"""The signed hand-over of a proxied login: it proves the grant under the shared secret, nothing else."""

from __future__ import annotations

from dataclasses import replace

from dovetail.mailauth import proxytoken
from dovetail.mailauth.proxytoken import Grant

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
