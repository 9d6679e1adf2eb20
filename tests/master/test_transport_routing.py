"""Transport rules through the master: mail to recipient domain A leaves by one relay, to B by another,
and a rule changed while the master runs applies to the next message within the check interval."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import Master, RelaySink, cli, relay_sink, wait_for

CHECK_INTERVAL = 1.0  # directory.cache_check_interval, the default


@pytest.fixture
def sinks() -> Iterator[list[tuple[RelaySink, int]]]:
    with relay_sink() as one, relay_sink() as two:
        yield [one, two]


def ok(master: Master, *args: str) -> str:
    out = cli(master.data_dir, *args)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


@pytest.fixture
def master(tmp_path: Path, sinks: list[tuple[RelaySink, int]]) -> Iterator[Master]:
    m = Master.create(tmp_path)
    (_, one), (_, two) = sinks
    ok(m, "transport", "set", "recipient", "alpha.example", "--relay", f"127.0.0.1:{one}", "--tls", "none")
    ok(m, "transport", "set", "recipient", "beta.example", "--relay", f"127.0.0.1:{two}", "--tls", "none")
    ok(m, "alias", "add", "to-alpha@acme.example", "x@alpha.example")
    ok(m, "alias", "add", "to-beta@acme.example", "y@beta.example")
    m.start()
    yield m
    m.stop()
    m.cleanup()


def send(master: Master, rcpt: str, subject: str) -> None:
    with master.smtp() as s:
        s.sendmail("carol@ext.example", [rcpt], f"Subject: {subject}\r\n\r\nx\r\n")


def test_recipient_domains_route_to_their_relays_and_a_change_applies_at_once(
        master: Master, sinks: list[tuple[RelaySink, int]]) -> None:
    (one, port_one), (two, _) = sinks
    send(master, "to-alpha@acme.example", "first to alpha")
    send(master, "to-beta@acme.example", "first to beta")
    wait_for(lambda: one.has(b"first to alpha") and two.has(b"first to beta"), 30, "both relays")
    assert not one.has(b"first to beta") and not two.has(b"first to alpha")
    assert [r for _, r, _ in two.messages] == [["y@beta.example"]]

    ok(master, "transport", "set", "recipient", "beta.example", "--relay", f"127.0.0.1:{port_one}", "--tls", "none")
    changed = time.monotonic()
    # Probe until one lands on the new relay: a probe may still take the old way only while the
    # queue manager's copy of the table can be a check interval old.
    for n in range(1, 40):
        subject = f"probe {n}".encode()
        sent_at = time.monotonic()
        send(master, "to-beta@acme.example", subject.decode())
        landed = wait_for(lambda s=subject: one if one.has(s) else two if two.has(s) else None, 30, "the probe")
        if landed is one:
            break
        assert sent_at - changed < CHECK_INTERVAL + 0.5, f"probe {n} took the old relay {sent_at - changed:.1f}s " \
                                                         "after the change"
    else:
        raise AssertionError("the change never applied")
    assert time.monotonic() - changed < 15
    assert "relay=127.0.0.1" in master.log()
