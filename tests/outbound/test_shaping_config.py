"""Shaping as operators set it: dovetail.toml tables, the CLI's refusals, and ``/metrics``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from dovetail import config
from dovetail.outbound.shaping import Limits, Shaper, ShapingConfig

from ..web.prom import parse
from .test_transport_cli import ok, refused

GOOD = '''
[outbound]
destination_concurrency = 20
destination_rate = ""

[outbound.destinations."gmail.com"]
concurrency = 10
rate = "600/min"

[outbound.destinations."*.protection.outlook.com"]
concurrency = 5

[outbound.destinations."Yahoo.com"]
rate = "20/s"
'''


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'dovetail.db'}"


def test_destination_tables_load_with_defaults_filled_in(tmp_path: Path) -> None:
    (tmp_path / config.CONFIG_NAME).write_text(GOOD)
    cfg = config.load(tmp_path)
    shaping = ShapingConfig.from_config(cfg)
    assert shaping.overrides == {"gmail.com": Limits(10, (600, 60.0)),
                                 "*.protection.outlook.com": Limits(5, None),
                                 "yahoo.com": Limits(20, (20, 1.0))}
    assert shaping.destination("contoso.example", ["contoso-example.mail.protection.outlook.com"]) == (
        "*.protection.outlook.com", Limits(5, None))
    assert shaping.destination("example.org") == ("example.org", Limits(20, None))
    assert shaping.pause == 60 and shaping.pause_max == 3600 and shaping.rate_wait_max == 10


@pytest.mark.parametrize(("table", "why"), [
    ('[outbound.destinations."gmail.com"]\nconcurrency = 0\n', "concurrency 0 must be a whole number of at least 1"),
    ('[outbound.destinations."gmail.com"]\nrate = "-5/min"\n', "a rate cannot be below zero"),
    ('[outbound.destinations."gmail.com"]\nrate = "fast"\n', "expected a rate such as 600/min"),
    ('[outbound.destinations."gmail.com"]\nburst = 3\n', "unknown setting 'burst'"),
    ('[outbound.destinations."*gmail.com"]\nconcurrency = 2\n', "expected a domain such as gmail.com"),
    ('[outbound.destinations."gmail..com"]\nconcurrency = 2\n', "expected a domain such as gmail.com"),
    ('[outbound.destinations."mx.*.google.com"]\nconcurrency = 2\n', "expected a domain such as gmail.com"),
    ('[outbound]\ndestination_rate = "-1/s"\n', "a rate cannot be below zero"),
    ('[outbound]\ndestination_concurrency = 0\n', "at least 1"),
])
def test_bad_destination_settings_are_refused_naming_the_key(tmp_path: Path, table: str, why: str) -> None:
    (tmp_path / config.CONFIG_NAME).write_text(table)
    with pytest.raises(config.ConfigError, match=why) as info:
        config.load(tmp_path)
    assert info.value.key.startswith("outbound.")


def test_cli_refuses_bad_rates_and_foreign_bind_addresses_and_saves_nothing(data_dir: Path) -> None:
    before = (data_dir / config.CONFIG_NAME).read_text()
    assert "a rate cannot be below zero" in refused(data_dir, "config", "set", "outbound.destination_rate=-3/min")
    assert "at least 1" in refused(data_dir, "config", "set", "outbound.destination_concurrency=0")
    assert (data_dir / config.CONFIG_NAME).read_text() == before
    ok(data_dir, "config", "set", "outbound.destination_rate=600/min")
    assert config.load(data_dir)["outbound.destination_rate"] == "600/min"

    ok(data_dir, "tenant", "add", "acme")
    err = refused(data_dir, "transport", "set", "tenant", "acme", "--mx", "--bind-address", "192.0.2.7")
    assert "bind address 192.0.2.7 is not an address of this machine" in err
    assert "not an IP address" in refused(data_dir, "transport", "set", "tenant", "acme", "--mx", "--bind-address",
                                          "mail.example")
    assert ok(data_dir, "transport", "list", "--json").strip() == "[]"
    assert "tenant acme -> mx from 127.0.0.2" in ok(data_dir, "transport", "set", "tenant", "acme", "--mx",
                                                    "--bind-address", "127.0.0.2")
    assert '"bind_address": "127.0.0.2"' in ok(data_dir, "transport", "list", "--json")


def test_metrics_per_destination_from_the_published_counters(tmp_path: Path) -> None:
    from dovetail import datadir

    from ..web.conftest import make_env

    root = tmp_path / "data"
    root.mkdir()
    (root / config.CONFIG_NAME).write_text(config.default_file_text())
    datadir.init(root)
    now = [0.0]

    async def shaped() -> Shaper:
        shaper = Shaper(ShapingConfig(), clock=lambda: now[0])
        for _ in range(3):
            shaper.count("gmail.com", "delivered")
        shaper.count("gmail.com", "deferred")
        shaper.count("example.org", "bounced")
        async with shaper.session("gmail.com", Limits(10)):
            shaper.throttled("gmail.com", "host mx said: 421 4.7.0 Try again later")
            shaper.publish(root / "run" / "outbound" / "qmgr.0.json")
        return shaper

    asyncio.run(shaped())
    second = Shaper(ShapingConfig())
    second.count("gmail.com", "delivered", n=2)
    second.publish(root / "run" / "outbound" / "qmgr.1.json")
    gone = Shaper(ShapingConfig())  # a process that ended without removing its file: not counted
    gone.count("gmail.com", "delivered", n=1000)
    (root / "run" / "outbound" / "qmgr.9.json").write_text(json.dumps({**gone.snapshot(), "pid": 4194305}))

    envs = make_env(root)
    env = next(envs)
    try:
        text = env.client.get("/metrics", headers=env.bearer(env.admin_token)).text
    finally:
        envs.close()
    metrics = parse(text)
    total = "dovetail_outbound_destination_recipients_total"
    assert metrics.types[total] == "counter"
    assert metrics.value(total, destination="gmail.com", outcome="delivered") == 5  # both live processes
    assert metrics.value(total, destination="gmail.com", outcome="deferred") == 1
    assert metrics.value(total, destination="example.org", outcome="bounced") == 1
    assert metrics.value("dovetail_outbound_destinations_paused") == 1
    assert metrics.value("dovetail_outbound_destination_pause_seconds", destination="gmail.com") == 60
    assert metrics.value("dovetail_outbound_destination_sessions", destination="gmail.com") == 1
