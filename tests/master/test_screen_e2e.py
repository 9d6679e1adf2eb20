"""The MX's screening stage through the whole server (as root: the cache file is the service user's):
a DNSBL-listed client refused, a pregreet client refused, a good client delivered and remembered,
and ``dovetail screen show/flush`` reading the workers' cache."""

from __future__ import annotations

import json
import re
import smtplib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from dovetail import config
from tests.dnsserver import LoopbackDNS

from .harness import Master, cli, wait_for


@pytest.fixture
def master(tmp_path: Path) -> Iterator[Master]:
    with LoopbackDNS() as dns_:
        dns_.a("50.0.0.127.bl.example", "127.0.0.2")
        dns_.a("50.0.0.127.wl.example", "127.0.0.255")  # outside the allowlist's filter: no offset
        dns_.a("53.0.0.127.bl.example", "127.255.255.255")  # the list's "rate limited": never a listing
        m = Master.create(tmp_path)
        for key, value in (("dns.nameservers", dns_.nameserver), ("mx.screen.allow", "127.0.0.1/32"),
                           ("mx.screen.greet_wait", "1s"),
                           ("mx.screen.dnsbl_sites", "bl.example*2, wl.example=127.0.[0..255].[1..3]*-5"),
                           ("mx.screen.dnsbl_threshold", "2"), ("mx.sender_auth", "no")):
            config.set_value(m.data_dir, key, value)
        m.start()
        yield m
        m.stop()
        m.cleanup()


def connect(m: Master, source: str) -> tuple[socket.socket, object]:
    sock = socket.socket()
    sock.settimeout(30)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", m.smtp_port))
    return sock, sock.makefile("rb")


def show(m: Master, ip: str) -> dict:
    out = cli(m.data_dir, "screen", "show", ip, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["screening"]


def test_screening_through_the_server(master: Master) -> None:
    m = master
    listed, lf = connect(m, "127.0.0.50")
    assert lf.readline() == b"220-mx.test.example ESMTP\r\n"
    assert lf.readline().startswith(b"220 ")
    listed.sendall(b"EHLO listed.test\r\n")
    assert lf.readline().startswith(b"550 5.7.1 Service unavailable; client [127.0.0.50] blocked using bl.example")
    listed.close()

    bot, bf = connect(m, "127.0.0.51")
    assert bf.readline() == b"220-mx.test.example ESMTP\r\n"
    bot.sendall(b"EHLO bot\r\nMAIL FROM:<x@bot.test>\r\n")
    assert bf.readline().startswith(b"220 ") and bf.readline() == b"550 5.5.1 Protocol error\r\n"
    bot.close()

    for source in ("127.0.0.52", "127.0.0.53"):  # clean, and listed only with an error code
        with smtplib.SMTP(timeout=30, source_address=(source, 0)) as s:
            assert s.connect("127.0.0.1", m.smtp_port)[0] == 220
            s.sendmail("a@sender.test", ["bob@acme.example"], b"Subject: hi\r\n\r\nbody\r\n")
    wait_for(lambda: len(m.maildir_files()) == 2, 30, "delivery")
    again, af = connect(m, "127.0.0.52")  # remembered: no greet wait
    assert af.readline().startswith(b"220 mx.test.example ESMTP")
    again.close()

    log = m.log()
    assert "DNSBL rank 2 for [127.0.0.50]:" in log
    assert re.search(r"PREGREET \d+ after [0-9.e-]+ from \[127\.0\.0\.51\]:\d+: EHLO bot", log)
    assert "PASS NEW [127.0.0.52]:" in log and "PASS OLD [127.0.0.52]:" in log
    assert "dnsbl bl.example: 127.255.255.255 for [127.0.0.53] is an error code of the list" in log

    assert show(m, "127.0.0.50")["cache"]["verdict"] == "DNSBL"
    assert show(m, "127.0.0.50")["cache"]["dnsbl_score"] == 2
    assert show(m, "127.0.0.51")["cache"]["verdict"] == "PREGREET"
    passed = show(m, "127.0.0.52")
    assert passed["cache"]["verdict"] == "PASS" and passed["cache"]["passes_tests_until"]
    assert show(m, "127.0.0.1")["allowlisted"] == ["127.0.0.1/32"]
    looked_up = cli(m.data_dir, "screen", "show", "127.0.0.50", "--lookup")
    assert looked_up.returncode == 0 and "score: 2" in looked_up.stdout and "bl.example*2" in looked_up.stdout
    flushed = cli(m.data_dir, "screen", "flush", "127.0.0.52")
    assert flushed.returncode == 0 and "1 screening cache entry removed" in flushed.stdout
    assert show(m, "127.0.0.52")["cache"] is None
    assert cli(m.data_dir, "screen", "show", "not-an-ip").returncode == 2

    def published() -> dict:
        """The screening counters of the smtpd workers (one per CPU), added up."""
        total: dict = {}
        for path in (m.data_dir / "run" / "stats").glob("smtpd.*.json"):
            for key, n in json.loads(path.read_text()).get("screen", {}).items():
                total[key] = total.get(key, 0) + n
        return total

    wait_for(lambda: published().get("pass_new") == 2 and published().get("dnsbl") == 1
             and published().get("pregreet") == 1, 10, "screening counters published")
    # After the CLI touched the cache as root, the workers can still write it.
    with smtplib.SMTP(timeout=30, source_address=("127.0.0.52", 0)) as s:
        assert s.connect("127.0.0.1", m.smtp_port)[0] == 220
        s.quit()
    wait_for(lambda: show(m, "127.0.0.52")["cache"] is not None, 10, "a new verdict in the cache")
