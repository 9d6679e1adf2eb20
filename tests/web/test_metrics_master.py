"""``/metrics`` of a real master: every service's workers, pids, restarts and connections, the queue
and the mail-flow totals, read by a strict parser of the exposition format."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..master.harness import Master, free_port, wait_for
from .prom import Exposition, parse


@pytest.fixture
def master(tmp_path: Path) -> Iterator[tuple[Master, str]]:
    m = Master.create(tmp_path)
    port = free_port()
    m.start("--http", f"127.0.0.1:{port}")
    try:
        yield m, f"http://127.0.0.1:{port}"
    finally:
        m.stop()
        m.cleanup()


def scrape(base: str) -> Exposition | None:
    """Loopback is a trusted network by default, so the scraper needs no credential."""
    try:
        r = httpx.get(f"{base}/metrics", timeout=5)
    except httpx.HTTPError:
        return None
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(r.text)


def test_metrics_cover_every_service(master: tuple[Master, str]) -> None:
    m, base = master
    first = wait_for(lambda: scrape(base), 30, "/metrics answering")
    assert first.value("dovetail_master_up") == 1
    services = set(m.status()["services"])
    assert {"smtpd", "imapd", "qmgr", "web"} <= services
    assert set(first.labelled("dovetail_service_enabled", "service")) == services
    for name in services:
        pids = m.worker_pids(name)
        assert first.value("dovetail_service_workers", service=name) == len(pids)
        reported = {int(v) for lab, v in first.samples["dovetail_worker_pid"] if lab["service"] == name and v}
        assert reported == set(pids)
    assert first.types["dovetail_service_restarts_total"] == "counter"
    assert set(first.labelled("dovetail_queue_messages", "state")) >= {"incoming", "active", "deferred", "hold"}
    assert first.value("dovetail_mail_total", counter="delivered") == 0

    with m.smtp() as s:
        s.sendmail("carl@ext.example", ["bob@acme.example"], "Subject: hi\r\n\r\nhello\r\n")
        s.sendmail("carl@ext.example", ["bob@acme.example"], "Subject: again\r\n\r\nhello\r\n")

    def counted() -> Exposition | None:
        e = scrape(base)
        if e is None:
            return None
        if min(e.value("dovetail_mail_total", counter=c) for c in ("received", "delivered")) < 2:
            return None  # smtpd and qmgr each flush their counts every 5 s
        if sum(v for lab, v in e.samples.get("dovetail_worker_connections_total", [])
               if lab["service"] == "smtpd") < 1:
            return None  # each worker (one per CPU) publishes its stats file once a second
        return e

    after = wait_for(counted, 40, "mail counters and smtpd connections in /metrics")
    assert after.value("dovetail_mail_total", counter="received") == 2
    assert after.value("dovetail_mail_total", counter="delivered") == 2
    assert after.value("dovetail_mail_total", counter="rejected") == 0
    assert after.value("dovetail_queue_messages", state="incoming") == 0
    assert {"smtpd", "imapd", "web"} <= set(after.labelled("dovetail_worker_connections", "service"))
    # Loopback clients skip the MX's screening (mx.screen.allow), and say so; two connections are no stress.
    assert after.value("dovetail_screen_decisions_total", decision="allowlisted") >= 1
    assert after.types["dovetail_screen_decisions_total"] == "counter"
    assert after.value("dovetail_smtpd_stress", worker="0") == 0
    assert after.value("dovetail_smtpd_stress_evictions_total") == 0
    assert len(m.maildir_files()) == 2

    old = m.worker_pids("smtpd")[0]  # worker 0 of one per CPU
    os.kill(old, signal.SIGKILL)

    def restarted() -> Exposition | None:
        e = scrape(base)
        if e is None or e.value("dovetail_service_restarts_total", service="smtpd") < 1:
            return None
        pid = e.value("dovetail_worker_pid", service="smtpd", worker="0")
        return e if pid and pid != old else None

    again = wait_for(restarted, 30, "the smtpd restart in /metrics")
    assert again.value("dovetail_worker_restarts_total", service="smtpd", worker="0") >= 1
    assert again.value("dovetail_service_restarts_total", service="qmgr") == 0
    assert again.value("dovetail_service_up", service="smtpd") == 1
