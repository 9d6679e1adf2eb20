"""Past the soft error limit each error reply waits (a tarpit for address harvesters); at the hard limit
the session gets 421 4.7.0 and ends. The waiting is a timer: other sessions are answered meanwhile."""

from __future__ import annotations

import time
from collections.abc import Callable

from dovetail.smtp.limits import Limits

from .conftest import RawClient, ServerThread
from .test_server import wait_until

SLEEP = 0.4


def test_errors_past_the_soft_limit_are_delayed_then_the_hard_limit_closes(
        start_server: Callable[..., ServerThread]) -> None:
    srv = start_server(Limits(soft_error_limit=2, error_sleep=SLEEP, max_errors=5))
    c = RawClient(srv.port)
    c.reply()
    c.send(b"EHLO x\r\n")
    c.reply()
    c.send(b"BOGUS\r\n" * 6)
    stamps = []
    for _ in range(5):
        code, _lines = c.reply()
        assert code == 500
        stamps.append(time.monotonic())
    assert c.reply() == (421, ["4.7.0 mx.test Error: too many errors"])
    assert c.closed_by_peer()
    # Errors 1 and 2 are answered at once; errors 3, 4 and 5 each wait SLEEP seconds.
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    assert gaps[0] < SLEEP
    assert all(g >= SLEEP * 0.9 for g in gaps[1:]), gaps
    wait_until(lambda: srv.server.active_connections == 0)


def test_a_tarpitted_client_does_not_hold_up_others(start_server: Callable[..., ServerThread]) -> None:
    srv = start_server(Limits(soft_error_limit=1, error_sleep=3.0, max_errors=50))
    slow = RawClient(srv.port)
    slow.reply()
    slow.send(b"EHLO x\r\nBOGUS\r\nBOGUS\r\nBOGUS\r\n")
    slow.reply()
    assert slow.reply()[0] == 500  # the first error is answered at once; the next ones wait 3 s each
    started = time.monotonic()
    other = RawClient(srv.port)
    assert other.reply()[0] == 220
    other.send(b"NOOP\r\n")
    assert other.reply()[0] == 250
    assert time.monotonic() - started < 2.0
    other.close()
    slow.close()
