"""`dovetail transport` as an operator runs it: one process per verb (:mod:`tests.clirun`)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests import clirun


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only: the store itself runs on PostgreSQL in test_engines.py."""
    return f"sqlite:///{tmp_path / 'dovetail.db'}"


def run(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return clirun.run(["--data-dir", str(data_dir), *args], env={**os.environ, "COLUMNS": "200"}, timeout=120)


def ok(data_dir: Path, *args: str) -> str:
    out = run(data_dir, *args)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def refused(data_dir: Path, *args: str) -> str:
    """A refusal: exit status 2 and one line on stderr, nothing on stdout."""
    out = run(data_dir, *args)
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stdout == "" and len(out.stderr.strip().splitlines()) == 1, out.stderr
    return out.stderr


def rules(data_dir: Path) -> list[tuple[str, str, object]]:
    return [(r["scope"], r["match"], r["port"]) for r in json.loads(ok(data_dir, "transport", "list", "--json"))]


@pytest.mark.timeout(300)  # one CLI process per verb
def test_transport_rules_and_resolve(data_dir: Path) -> None:
    ok(data_dir, "tenant", "add", "acme")
    ok(data_dir, "domain", "add", "acme.example", "--tenant", "acme")
    assert "recipient partner.example -> relay:[127.0.0.1]:2526" in ok(
        data_dir, "transport", "set", "recipient", "Partner.Example", "--relay", "relay:[127.0.0.1]:2526", "--tls",
        "none")
    ok(data_dir, "transport", "set", "recipient", ".partner.example", "--relay", "localhost:2527", "--tls", "none")
    ok(data_dir, "transport", "set", "sender", "@acme.example", "--mx")
    ok(data_dir, "transport", "set", "tenant", "ACME", "--relay", "[127.0.0.1]:2528", "--tls", "none")
    ok(data_dir, "transport", "set", "default", "*", "--relay", "127.0.0.1:2529", "--tls", "none")

    out = ok(data_dir, "transport", "resolve", "bob@acme.example", "carl@partner.example")
    assert "relay:[127.0.0.1]:2526" in out and "recipient partner.example (recipient domain)" in out
    route = json.loads(ok(data_dir, "transport", "resolve", "bob@acme.example", "carl@eu.partner.example", "--json"))
    assert route["transport"] == "relay:[localhost]:2527"
    assert route["rule"] == {"scope": "recipient", "match": ".partner.example", "kind": "recipient subdomains"}
    assert json.loads(ok(data_dir, "transport", "resolve", "bob@acme.example", "x@else.example", "--json"))[
        "rule"]["kind"] == "sender domain"
    assert json.loads(ok(data_dir, "transport", "resolve", "<>", "x@else.example", "--json"))["rule"][
        "scope"] == "default"
    assert json.loads(ok(data_dir, "transport", "resolve", "a@ext.example", "x@else.example", "--tenant", "acme",
                         "--json"))["rule"]["scope"] == "tenant"
    local = json.loads(ok(data_dir, "transport", "resolve", "a@ext.example", "bob@ACME.example", "--json"))
    assert local["transport"] == "virtual" and local["rule"] is None

    before = rules(data_dir)
    assert ("recipient", "partner.example", 2526) in before and ("domain", "acme.example", None) in before
    assert "not one of ours" in refused(data_dir, "transport", "set", "sender", "@foreign.example", "--mx")
    assert "not one of ours" in refused(data_dir, "transport", "set", "domain", "foreign.example", "--mx")
    assert "not one of ours" in refused(data_dir, "transport", "set", "sender", "ceo@foreign.example", "--mx")
    assert "no tenant" in refused(data_dir, "transport", "set", "tenant", "nobody", "--mx")
    assert "rule kind 'planet'" in refused(data_dir, "transport", "set", "planet", "x", "--mx")
    assert "one of our domains" in refused(data_dir, "transport", "set", "recipient", "acme.example", "--mx")
    assert "does not resolve" in refused(data_dir, "transport", "set", "recipient", "partner.example", "--relay",
                                         "no-such-host.invalid:25")
    assert "closing ']'" in refused(data_dir, "transport", "set", "recipient", "partner.example", "--relay",
                                    "relay:[127.0.0.1:25")
    assert "port" in refused(data_dir, "transport", "set", "recipient", "partner.example", "--relay",
                             "relay:[127.0.0.1]:99999")
    assert "exactly one" in refused(data_dir, "transport", "set", "recipient", "partner.example", "--mx", "--relay",
                                    "127.0.0.1:25")
    assert "not an address" in refused(data_dir, "transport", "resolve", "bob@acme.example", "no address")
    assert rules(data_dir) == before  # nothing half-saved

    ok(data_dir, "transport", "set", "recipient", "later.example", "--relay", "not-yet.invalid:25", "--no-dns-check")
    ok(data_dir, "transport", "rm", "recipient", "partner.example")
    assert "no transport rule" in refused(data_dir, "transport", "rm", "recipient", "partner.example")
    assert json.loads(ok(data_dir, "transport", "resolve", "bob@acme.example", "carl@partner.example", "--json"))[
        "rule"]["scope"] == "domain"
