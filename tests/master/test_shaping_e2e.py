"""Shaping through a real master, as operators run it: a relay reached from a rule's bind address,
and the queue manager's per-destination counters in ``/metrics`` of the web service."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from aiosmtpd.controller import Controller

from ..web.prom import Exposition, parse
from .harness import Master, RelaySink, cli, free_port, wait_for


class PeerSink(RelaySink):
    """Also keeps the address each message came from."""

    def __init__(self) -> None:
        super().__init__()
        self.peers: list[str] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: ANN001, ANN201, N802
        with self.lock:
            self.peers.append(session.peer[0])
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def sink() -> Iterator[tuple[PeerSink, int]]:
    handler, port = PeerSink(), free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


def ok(master: Master, *args: str) -> str:
    out = cli(master.data_dir, *args)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def scrape(base: str) -> Exposition | None:
    try:
        r = httpx.get(f"{base}/metrics", timeout=5)
    except httpx.HTTPError:
        return None
    return parse(r.text) if r.status_code == 200 else None


def test_bind_address_and_destination_metrics_through_the_master(tmp_path: Path,
                                                                  sink: tuple[PeerSink, int]) -> None:
    handler, port = sink
    m = Master.create(tmp_path)
    # Forwarded mail keeps its foreign sender (no tenant): the default rule carries the address here.
    ok(m, "transport", "set", "default", "*", "--relay", f"127.0.0.1:{port}", "--tls", "none",
       "--bind-address", "127.0.0.2")
    ok(m, "alias", "add", "out@acme.example", "x@far.example", "y@far.example")
    http = free_port()
    m.start("--http", f"127.0.0.1:{http}")
    try:
        with m.smtp() as s:
            s.sendmail("carol@ext.example", ["out@acme.example"], "Subject: shaped\r\n\r\nx\r\n")
        wait_for(lambda: handler.has(b"shaped"), 30, "the relayed message")
        assert handler.peers == ["127.0.0.2"]
        total = "dovetail_outbound_destination_recipients_total"
        destination = f"relay:[127.0.0.1]:{port}"

        def counted() -> Exposition | None:
            got = scrape(f"http://127.0.0.1:{http}")
            if got is None or not any(lab.get("destination") == destination for lab, _ in got.samples.get(total, [])):
                return None
            return got

        metrics = wait_for(counted, 30, "the destination's counters in /metrics")
        assert metrics.value(total, destination=destination, outcome="delivered") == 2
        assert metrics.value(total, destination=destination, outcome="deferred") == 0
        assert metrics.value("dovetail_outbound_destinations_paused") == 0
    finally:
        m.stop()
        m.cleanup()
