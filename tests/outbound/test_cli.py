"""Outbound verbs of the `dovetail` command, run as an operator would."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests import clirun


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only: each verb is a process of its own; the stores run on PostgreSQL in test_engines.py."""
    return f"sqlite:///{tmp_path / 'dovetail.db'}"


def run(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return clirun.run(["--data-dir", str(data_dir), *args], env=env, timeout=120)


def ok(data_dir: Path, *args: str) -> str:
    out = run(data_dir, *args)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


@pytest.mark.timeout(300)  # some thirty CLI processes, each importing the package
def test_outbound_verbs(data_dir: Path) -> None:
    ok(data_dir, "config", "set", "server.hostname=mx.dovetail.test")
    ok(data_dir, "tenant", "add", "acme")
    ok(data_dir, "domain", "add", "acme.example", "--tenant", "acme")
    ok(data_dir, "dkim", "generate", "acme.example")
    keys = json.loads(ok(data_dir, "dkim", "list", "acme.example", "--json"))
    assert {k["algorithm"] for k in keys} == {"rsa-sha256", "ed25519-sha256"}
    assert {k["state"] for k in keys} == {"active"}
    for k in keys:
        assert (data_dir / "dkim" / "acme.example" / f"{k['selector']}.key").stat().st_mode & 0o777 == 0o600
    assert "Publish the new selectors" in ok(data_dir, "dkim", "rotate", "acme.example")
    assert run(data_dir, "dkim", "rotate", "acme.example").returncode == 2
    zone = ok(data_dir, "dns", "acme.example")
    assert "acme.example.\t3600\tIN\tMX\t10 mx.dovetail.test." in zone
    assert zone.count("._domainkey.acme.example.") == 4  # active and published pairs
    assert "_dmarc.acme.example." in zone and "_mta-sts.acme.example." in zone
    assert "_25._tcp.mx.dovetail.test.\t3600\tIN\tTLSA\t3 1 1 " in zone  # DANE for init's certificate
    ok(data_dir, "dkim", "activate", "acme.example")
    ok(data_dir, "dkim", "retire", "acme.example")
    assert len(json.loads(ok(data_dir, "dkim", "list", "--json"))) == 2

    cred = json.loads(ok(data_dir, "smtp-credentials", "add", "acme", "--description", "app", "--json"))
    assert cred["username"].startswith("acme-") and len(cred["secret"]) > 20
    listed = json.loads(ok(data_dir, "smtp-credentials", "list", "--json"))
    assert [c["username"] for c in listed] == [cred["username"]] and "secret" not in listed[0]
    assert cred["secret"] not in ok(data_dir, "smtp-credentials", "list")
    ok(data_dir, "smtp-credentials", "rm", cred["username"])
    assert run(data_dir, "smtp-credentials", "rm", cred["username"]).returncode == 2
    assert run(data_dir, "smtp-credentials", "add", "nobody").returncode == 2

    out = ok(data_dir, "transport", "set", "tenant", "acme", "--relay", "email-smtp.eu-west-1.amazonaws.com:587",
             "--user", "AKIA", "--secret", "s3cr3t", "--no-dns-check")
    assert "SES eu-west-1" in out
    assert "s3cr3t" not in ok(data_dir, "transport", "list", "--json")
    assert "bounce.acme.example." in ok(data_dir, "dns", "acme.example")
    assert run(data_dir, "transport", "set", "tenant", "acme", "--mx", "--relay", "h:1").returncode == 2
    assert run(data_dir, "transport", "set", "tenant", "acme", "--relay", "nonsense").returncode == 2
    ok(data_dir, "transport", "rm", "tenant", "acme")
    assert "acme: 10 per minute" in ok(data_dir, "send-limits", "acme", "--per-minute", "10")
    assert run(data_dir, "dkim", "rotate", "unknown.example").returncode == 2
    assert run(data_dir, "dns", "bad domain!").returncode == 2


def _sts_id(zone: str) -> str:
    (line,) = [line for line in zone.splitlines() if line.startswith("_mta-sts.")]
    return line.split("id=")[1].rstrip('"')


def test_dns_mta_sts_id_changes_with_the_policy_only(data_dir: Path) -> None:
    ok(data_dir, "config", "set", "server.hostname=mx.dovetail.test")
    ok(data_dir, "tenant", "add", "acme")
    ok(data_dir, "domain", "add", "acme.example", "--tenant", "acme")
    zone = ok(data_dir, "dns", "acme.example")
    assert ok(data_dir, "dns", "acme.example") == zone  # printed again: the same zone, MTA-STS id included
    first = _sts_id(zone)
    ok(data_dir, "config", "set", "server.hostname=mx2.dovetail.test")  # the policy's mx: line changes
    assert _sts_id(ok(data_dir, "dns", "acme.example")) != first


@pytest.mark.parametrize("verb", [["dns"], ["dns", "check"], ["dns", "--json"]])
def test_dns_for_a_domain_not_ours_is_one_line_and_exit_2(data_dir: Path, verb: list[str]) -> None:
    ok(data_dir, "tenant", "add", "acme")
    ok(data_dir, "domain", "add", "acme.example", "--tenant", "acme")
    out = run(data_dir, *verb, "example.org")
    assert out.returncode == 2
    assert out.stdout == ""
    assert out.stderr.strip().splitlines() == ["dovetail: error: dns: example.org is not a domain of this server"]
