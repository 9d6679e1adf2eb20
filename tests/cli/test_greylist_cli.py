"""``dovetail greylist`` and the --greylist switches of tenants and domains, through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dovetail import config
from dovetail.db import make_engine
from dovetail.directory import Directory
from dovetail.intake.greylist import Greylist, GreylistSettings

from .test_cli import ok, run


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only: the greylist's SQL runs on PostgreSQL in tests/intake; here the CLI is what is tested."""
    return f"sqlite:///{tmp_path / 'dovetail.db'}"


@pytest.mark.timeout(300)  # one CLI process per verb, each importing the package
def test_greylist_switches_list_allow_and_flush(data_dir: Path) -> None:
    cfg = config.load(data_dir)
    engine = make_engine(cfg.database_url)
    directory = Directory(engine)
    directory.tenant_add("acme")
    directory.domain_add("acme.example", "acme")
    ok(data_dir, "tenant", "set", "acme", "--greylist", "on")
    assert json.loads(ok(data_dir, "tenant", "show", "acme", "--json"))["greylist"] is True
    assert json.loads(ok(data_dir, "domain", "set", "acme.example", "--greylist", "off", "--json"))["greylist"] == "off"
    assert "greylisting of mail to acme.example: inherit" in ok(data_dir, "domain", "set", "acme.example",
                                                                "--greylist", "inherit")
    bad = run(data_dir, "domain", "set", "acme.example", "--greylist", "maybe")
    assert bad.returncode == 2 and "give on, off or inherit" in bad.stderr

    Greylist(engine, GreylistSettings.from_config(cfg)).check("192.0.2.10", "a@sender.test", "bob@acme.example")
    engine.dispose()
    assert "greylisting: 198.51.100.0/24 allowed" in ok(data_dir, "greylist", "allow", "198.51.100.9")
    listing = json.loads(ok(data_dir, "greylist", "list", "--json"))
    assert [(c["network"], c["status"]) for c in listing["clients"]] == [("198.51.100.0/24", "allowed")]
    assert [(t["network"], t["sender"], t["status"]) for t in listing["triplets"]] == [
        ("192.0.2.0/24", "a@sender.test", "greylisted")]
    assert json.loads(ok(data_dir, "greylist", "list", "192.0.2.77", "--json"))["clients"] == []
    assert "192.0.2.0/24" in ok(data_dir, "greylist", "list")
    bad = run(data_dir, "greylist", "allow", "not-an-ip")
    assert bad.returncode == 2 and "not an IP address" in bad.stderr
    assert json.loads(ok(data_dir, "greylist", "flush", "--expired", "--json")) == {"triplets": 0, "clients": 0}
    assert "greylist flushed: 1 triplets, 1 clients" in ok(data_dir, "greylist", "flush")
