"""``dovetail domain set --mta-sts`` and ``dovetail reports``, run as an operator would."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dovetail import config
from dovetail.db import make_engine
from dovetail.reports.intake import ReportIntake

from ..outbound.test_cli import _sts_id, ok, run
from . import samples


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only: each verb is a process of its own; the stores run on both engines in test_intake.py."""
    return f"sqlite:///{tmp_path / 'dovetail.db'}"


@pytest.mark.timeout(300)
def test_mta_sts_mode_per_domain_and_the_policy_id(data_dir: Path) -> None:
    ok(data_dir, "config", "set", "server.hostname=mx.dovetail.test")
    ok(data_dir, "tenant", "add", "acme")
    ok(data_dir, "domain", "add", "acme.example", "--tenant", "acme")
    testing = _sts_id(ok(data_dir, "dns", "acme.example"))
    assert "MTA-STS mode of acme.example: enforce" in ok(data_dir, "domain", "set", "acme.example",
                                                          "--mta-sts", "enforce")
    enforce = _sts_id(ok(data_dir, "dns", "acme.example"))
    assert enforce != testing and _sts_id(ok(data_dir, "dns", "acme.example")) == enforce
    assert json.loads(ok(data_dir, "domain", "set", "acme.example", "--mta-sts", "testing", "--json"))[
        "mta_sts_mode"] == "testing"
    assert _sts_id(ok(data_dir, "dns", "acme.example")) == testing
    bad = run(data_dir, "domain", "set", "acme.example", "--mta-sts", "strict")
    assert bad.returncode == 2 and "--mta-sts 'strict'" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    zone = ok(data_dir, "dns", "acme.example")
    assert "rua=mailto:dmarc-reports@acme.example" in zone and "rua=mailto:tls-reports@acme.example" in zone


@pytest.mark.timeout(300)
def test_reports_tables(data_dir: Path) -> None:
    ok(data_dir, "tenant", "add", "acme")
    ok(data_dir, "domain", "add", "acme.example", "--tenant", "acme")
    engine = make_engine(config.load(data_dir).database_url)
    intake = ReportIntake(engine)
    intake.process("acme", "dmarc-reports@acme.example", samples.google_dmarc_mail())
    intake.process("acme", "tls-reports@acme.example", samples.google_tls_mail())
    intake.process("acme", "tls-reports@acme.example", b"Subject: hi\r\n\r\nno report\r\n", "cur/1")
    engine.dispose()
    table = ok(data_dir, "reports", "dmarc", "--domain", "acme.example")
    assert "198.51.100.7" in table and "google.com" in table and "fail" in table
    assert "certificate-expired 2" in ok(data_dir, "reports", "tls")
    data = json.loads(ok(data_dir, "reports", "dmarc", "--json", "--from", samples.DAY, "--to", samples.DAY))
    assert data["days"][0]["messages"] == 15
    assert json.loads(ok(data_dir, "reports", "tls", "--json", "--from", "2026-12-05"))["days"] == []
    assert "no report attached" in ok(data_dir, "reports", "rejected")
    for args in (["dmarc", "--from", "yesterday"], ["tls", "--domain", "nowhere.example"]):
        out = run(data_dir, "reports", *args)
        assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
