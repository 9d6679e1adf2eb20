"""Stress mode of the MX listener over real sockets: idle clients make room, timeouts and the error limit
shrink, connections per network are capped."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dovetail.mailauth.networks import client_network
from dovetail.smtp import server as smtp_server
from dovetail.smtp.limits import Limits

from ..smtp.conftest import FileBackend, ServerThread
from .test_screen_server import Client, send_message


def wait_until(cond: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.02)


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[[Limits], ServerThread]]:
    started: list[ServerThread] = []

    def go(limits: Limits) -> ServerThread:
        st = ServerThread(FileBackend(tmp_path / f"q{len(started)}"), limits=limits, hostname="mx.test")
        st.start()
        started.append(st)
        return st

    yield go
    for st in started:
        st.stop()


def test_idle_clients_make_room_for_a_sender(start, caplog) -> None:  # noqa: ANN001
    st = start(Limits(max_connections=4, stress_threshold=0.5))
    busy = Client(st.port, "127.0.0.21")  # the oldest, but in a transaction: never closed to make room
    busy.reply()
    busy.send(b"EHLO busy\r\nMAIL FROM:<a@x.test>\r\n")
    assert busy.reply()[0] == 250 and busy.reply()[0] == 250
    idle = []
    for n in range(3):
        c = Client(st.port, f"127.0.0.{22 + n}")
        assert c.reply()[0] == 220
        idle.append(c)
    assert st.run(lambda: st.server.stressed)
    wait_until(lambda: st.run(st.server.longest_idle) >= smtp_server.EVICT_MIN_AGE)
    legit = Client(st.port, "127.0.0.30")  # the listener is full: the longest idle client goes
    assert legit.reply()[0] == 220
    assert send_message(legit) == 250
    assert idle[0].reply() == (421, [b"421 4.7.0 mx.test Error: too many connections\r\n"])
    assert idle[0].closed()
    busy.send(b"RCPT TO:<ok@y.test>\r\n")
    assert busy.reply()[0] == 250
    assert st.run(lambda: st.server.evicted) == 1
    assert "stress mode on: 2 connections" in caplog.text
    assert "stress: closing idle connection from unknown[127.0.0.22] to make room" in caplog.text


def test_new_clients_are_refused_when_no_idle_client_can_go(start) -> None:  # noqa: ANN001
    st = start(Limits(max_connections=2, stress_threshold=0.5))
    held = [Client(st.port, "127.0.0.31"), Client(st.port, "127.0.0.32")]
    for c in held:
        assert c.reply()[0] == 220
    late = Client(st.port, "127.0.0.33")  # the idle ones are too fresh to be closed
    assert late.reply()[0] == 421
    for c in held:
        c.send(b"NOOP\r\n")
        assert c.reply()[0] == 250


def test_stress_shrinks_idle_timeout_and_error_limit(start, caplog) -> None:  # noqa: ANN001
    st = start(Limits(max_connections=4, stress_threshold=0.5, stress_idle_timeout=1.0, stress_max_errors=1))
    calm = Client(st.port, "127.0.0.41")
    calm.reply()
    calm.send(b"BOGUS\r\n")  # one error, no stress yet: the session goes on
    assert calm.reply()[0] == 500
    calm.send(b"NOOP\r\n")
    assert calm.reply()[0] == 250
    second = Client(st.port, "127.0.0.42")  # two connections: stress
    second.reply()
    calm.send(b"NOOP\r\n")  # one error counted already: under stress it is one too many
    assert calm.reply()[0] == 421
    started = time.monotonic()
    code, lines = second.reply()  # left idle: cut after the stress timeout, not the 300 s one
    assert code == 421 and b"timeout" in lines[0]
    assert time.monotonic() - started < 5.0
    wait_until(lambda: not st.run(lambda: st.server.stressed))
    assert "stress mode off" in caplog.text


def test_connections_per_network(start) -> None:  # noqa: ANN001
    st = start(Limits(max_connections_per_network=2))
    a, b = Client(st.port, "127.0.5.1"), Client(st.port, "127.0.5.2")
    assert a.reply()[0] == 220 and b.reply()[0] == 220
    third = Client(st.port, "127.0.5.3")
    assert third.reply() == (421, [b"421 4.7.0 mx.test Error: too many connections from your network\r\n"])
    other = Client(st.port, "127.0.6.1")  # another /24
    assert other.reply()[0] == 220
    assert client_network("2001:db8:1:2:3::1") == "2001:db8:1:2::/64"
    assert client_network("::ffff:192.0.2.77") == "192.0.2.0/24"
