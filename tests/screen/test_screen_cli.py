"""``dovetail screen show IP`` gathers what every MX stage knows of a client: screening, rates, greylist."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dovetail import config
from dovetail.db import connect_and_migrate
from dovetail.intake.greylist import Greylist, GreylistSettings
from tests.cli.test_cli import ok, run


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_show_has_a_section_per_stage(data_dir: Path) -> None:
    cfg = config.load(data_dir)
    greylist = Greylist(connect_and_migrate(cfg), GreylistSettings.from_config(cfg))
    greylist.check("192.0.2.7", "eve@spam.example", "bob@acme.example")
    shown = json.loads(ok(data_dir, "screen", "show", "192.0.2.7", "--json"))
    assert shown["ip"] == "192.0.2.7"
    assert shown["screening"]["allowlisted"] is None
    assert "limit" in json.dumps(shown["rate limits"])
    triplets = [e for e in shown["greylist"].values() if e and e.get("kind") == "triplet"]
    assert len(triplets) == 1 and triplets[0]["status"] == "greylisted"
    text = ok(data_dir, "screen", "show", "192.0.2.7")
    assert "rate limits:" in text and "greylist:" in text
    assert run(data_dir, "screen", "show", "not-an-ip").returncode == 2
