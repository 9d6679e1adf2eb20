"""Rate limits at the MX: real SMTP over loopback from several 127.x.y.z addresses (and ::1), counts in
the shared run/ file that two workers' backends open separately."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from dovetail import config, datadir
from dovetail.intake import ratelimit
from dovetail.intake.ratelimit import (
    MemoryWindows,
    RateLimits,
    RatePolicy,
    SqliteWindows,
    client_network,
    rate_state,
    shared_windows,
)
from dovetail.smtp.backend import SessionInfo
from dovetail.smtp.events import MailParams
from dovetail.smtp.limits import Limits

from .conftest import Client, Mx, session

OPEN = dict(connections_per_ip=0, connections_per_network=0, messages_per_ip=0, messages_per_network=0,
            recipients_per_ip=0)


def limits(**values: int) -> RateLimits:
    return RateLimits(**{**OPEN, **values}, exempt=[])


def test_client_network_groups_by_24_and_64() -> None:
    assert client_network("198.51.100.77") == "198.51.100.0/24"
    assert client_network("::ffff:198.51.100.77") == "198.51.100.0/24"
    assert client_network("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
    assert client_network("::1") == "::/64"
    assert client_network("not-an-ip") == "not-an-ip"


def test_sliding_window_weighs_the_previous_minute(tmp_path: Path) -> None:
    for windows in (SqliteWindows(tmp_path / "r.sqlite"), MemoryWindows()):
        for _ in range(10):
            windows.hit(("k",), 600.0)  # minute 10
        assert windows.peek(("k",), 630.0) == {"k": 10.0}
        # Half-way through minute 11 half of minute 10 still lies within the last 60 seconds.
        assert windows.hit(("k",), 690.0) == {"k": 1 + 5.0}
        assert windows.peek(("k",), 781.0)["k"] < 1  # two minutes on: nothing left of minute 10


def test_workers_share_counts_and_old_minutes_are_pruned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "r.sqlite"
    one, two = SqliteWindows(path), SqliteWindows(path)
    one.hit(("a",), 60.0)
    assert two.hit(("a",), 61.0) == {"a": 2.0}
    monkeypatch.setattr(ratelimit, "PRUNE_EVERY", 1)
    for minute in range(2, 10):
        two.hit(("a", f"b{minute}"), minute * 60.0)
    assert two.rows() <= 4  # only this minute's and the previous minute's rows remain
    monkeypatch.setattr(ratelimit, "MAX_ROWS", 10)
    two.hit(tuple(f"flood{i}" for i in range(30)), 600.0)
    assert two.rows() <= 10 + 30
    two.hit(("x",), 601.0)
    assert two.rows() <= 10


def test_a_file_that_cannot_be_opened_counts_in_memory(tmp_path: Path) -> None:
    assert isinstance(shared_windows(tmp_path / "missing" / "dir"), MemoryWindows)


async def _refused(port: int, source: str, host: str = "127.0.0.1") -> tuple[int, str]:
    c = await Client.connect(port, source, host)
    try:
        reply = await c.reply()
        if reply[0] == 421:
            assert await c.closed()
        return reply
    finally:
        await c.close()


def test_connection_rate_per_ip_then_per_network(mx: Mx) -> None:
    async def run() -> None:
        port = await mx.start(mx.backend(limits(connections_per_ip=3, connections_per_network=5)))
        try:
            codes = [(await _refused(port, "127.0.3.1"))[0] for _ in range(4)]
            assert codes == [220, 220, 220, 421]
            code, text = await _refused(port, "127.0.3.1")
            assert (code, text) == (421, "4.7.0 mx.ours.test Error: too many connections from 127.0.3.1")
            # Another address of the same /24: its own per-IP count, but the network's is over 5 by now.
            assert (await _refused(port, "127.0.3.2"))[0] == 421
            # Another network is not affected.
            assert (await _refused(port, "127.0.4.1"))[0] == 220
        finally:
            await mx.stop()

    asyncio.run(run())
    assert mx.counts["ratelimit_connection"] == 3


def test_two_workers_share_one_connection_allowance(mx: Mx) -> None:
    async def run() -> None:
        ports = [await mx.start(mx.backend(limits(connections_per_ip=4))) for _ in range(2)]
        try:
            codes = [(await _refused(ports[i % 2], "127.0.5.9"))[0] for i in range(6)]
        finally:
            await mx.stop()
        assert codes == [220, 220, 220, 220, 421, 421]

    asyncio.run(run())


def test_message_rate_per_ip_answers_450_at_mail(mx: Mx) -> None:
    async def run() -> None:
        port = await mx.start(mx.backend(limits(messages_per_ip=2)))
        try:
            c = await session(port, "127.0.6.1")
            for _ in range(2):
                assert (await c.cmd("MAIL FROM:<a@sender.test>"))[0] == 250
                assert (await c.cmd("RSET"))[0] == 250
            assert await c.cmd("MAIL FROM:<a@sender.test>") == (450, "4.7.1 Error: too much mail from 127.0.6.1")
            await c.close()
            other = await session(port, "127.0.6.2")
            assert (await other.cmd("MAIL FROM:<a@sender.test>"))[0] == 250
            await other.close()
        finally:
            await mx.stop()

    asyncio.run(run())
    assert mx.counts["ratelimit_message"] == 1


def test_message_rate_per_network(mx: Mx) -> None:
    async def run() -> None:
        port = await mx.start(mx.backend(limits(messages_per_network=2)))
        try:
            codes = []
            for last in (1, 2, 3):
                c = await session(port, f"127.0.7.{last}")
                codes.append((await c.cmd("MAIL FROM:<a@sender.test>"))[0])
                await c.close()
            assert codes == [250, 250, 450]
        finally:
            await mx.stop()

    asyncio.run(run())


def test_recipient_rate_and_recipients_per_message(mx: Mx) -> None:
    async def run() -> None:
        port = await mx.start(mx.backend(limits(recipients_per_ip=4)), Limits(max_recipients=2))
        try:
            c = await session(port, "127.0.8.1")
            assert (await c.cmd("MAIL FROM:<a@sender.test>"))[0] == 250
            assert (await c.cmd("RCPT TO:<bob@acme.example>"))[0] == 250
            assert (await c.cmd("RCPT TO:<eve@quiet.example>"))[0] == 250
            assert await c.cmd("RCPT TO:<bob@acme.example>") == (452, "4.5.3 Error: too many recipients")
            assert (await c.cmd("DATA"))[0] == 354
            assert (await c.cmd("Subject: t\r\n\r\nhi\r\n."))[0] == 250
            assert (await c.cmd("MAIL FROM:<a@sender.test>"))[0] == 250
            assert (await c.cmd("RCPT TO:<bob@acme.example>"))[0] == 250
            # A probe for an unknown address counts as well: harvesting is what the limit is for.
            assert (await c.cmd("RCPT TO:<nobody@acme.example>"))[0] == 550
            assert await c.cmd("RCPT TO:<eve@quiet.example>") == (450, "4.7.1 Error: too many recipients from "
                                                                        "127.0.8.1")
            await c.close()
        finally:
            await mx.stop()

    asyncio.run(run())
    assert mx.counts["ratelimit_recipient"] == 1
    assert len(mx.queue.ids("incoming")) == 1


def test_exempt_networks_and_authenticated_sessions_are_not_counted(mx: Mx) -> None:
    tight = RateLimits(**{**OPEN, "connections_per_ip": 1, "messages_per_ip": 1})  # loopback exempt by default

    async def run() -> None:
        backend = mx.backend(tight)
        port = await mx.start(backend)
        try:
            assert [(await _refused(port, "127.0.9.1"))[0] for _ in range(3)] == [220, 220, 220]
            authed = SessionInfo("203.0.113.5", 1000, auth_user="bob@acme.example")
            stranger = SessionInfo("203.0.113.5", 1001)
            for _ in range(3):
                assert await backend.check_sender(authed, "bob@acme.example", MailParams()) is None
            assert await backend.check_sender(stranger, "x@y.test", MailParams()) is None
            assert (await backend.check_sender(stranger, "x@y.test", MailParams())).code == 450
        finally:
            await mx.stop()

    asyncio.run(run())


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6")
def test_ipv6_client_is_limited_by_its_64(mx: Mx) -> None:
    async def run() -> None:
        port = await mx.start(mx.backend(limits(connections_per_network=2)), host="::1")
        try:
            codes = [(await _refused(port, "::1", host="::1"))[0] for _ in range(3)]
        finally:
            await mx.stop()
        assert codes == [220, 220, 421]

    asyncio.run(run())


def test_rate_state_reports_what_the_workers_counted(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    (root / config.CONFIG_NAME).write_text(config.default_file_text())
    datadir.init(root)
    config.set_value(root, "mx.rate.connections_per_ip", "7")
    cfg = config.load(root)
    policy = RatePolicy(ratelimit.rate_limits(cfg), SqliteWindows(root / "run" / ratelimit.RATES_FILE))
    for _ in range(3):
        assert policy.connection("198.51.100.4") is None
    state = rate_state(cfg, "198.51.100.4")
    assert state["network"] == "198.51.100.0/24" and state["exempt"] is False
    assert state["connections_per_ip"]["limit"] == 7
    assert 0 < state["connections_per_ip"]["rate"] <= 3  # less only when a minute turned between hits and look
    assert state["recipients_per_ip"]["limit"] == 1000


def test_rate_state_does_not_create_the_workers_file(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    (root / config.CONFIG_NAME).write_text(config.default_file_text())
    datadir.init(root)
    state = rate_state(config.load(root), "::ffff:192.0.2.1")
    assert state["network"] == "192.0.2.0/24" and state["messages_per_ip"] == {"rate": 0, "limit": 100}
    assert not (root / "run" / ratelimit.RATES_FILE).exists()
