"""Sender authentication through the whole server: a DMARC reject refused, a quarantine in Junk, the
verdicts in the queue id's log line, the per-domain switch from the CLI, and /metrics counting them."""

from __future__ import annotations

import re
import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest

from dovetail import config
from tests.dnsserver import LoopbackDNS

from .harness import Master, cli, wait_for


@pytest.fixture
def master(tmp_path: Path) -> Iterator[tuple[Master, LoopbackDNS]]:
    with LoopbackDNS() as dns_:
        dns_.txt("bank.test", "v=spf1 ip4:192.0.2.1 -all")
        dns_.txt("_dmarc.bank.test", "v=DMARC1; p=reject")
        dns_.txt("shop.test", "v=spf1 ip4:192.0.2.1 -all")
        dns_.txt("_dmarc.shop.test", "v=DMARC1; p=quarantine")
        m = Master.create(tmp_path)
        config.set_value(m.data_dir, "dns.nameservers", dns_.nameserver)
        config.set_value(m.data_dir, "mx.sender_auth_exempt", "")  # the test's client is on loopback
        m.start()
        yield m, dns_
        m.stop()
        m.cleanup()


def send(m: Master, sender: str, from_: str) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", m.smtp_port, timeout=30) as s:
        s.ehlo("mail.sender.test")
        s.mail(sender)
        s.rcpt("bob@acme.example")
        return s.data(f"From: {from_}\r\nTo: bob@acme.example\r\nSubject: hi\r\n\r\nbody\r\n".encode())


def junk_files(m: Master) -> list[Path]:
    root = m.data_dir / "mail" / "acme" / "acme.example" / "bob" / ".Junk"
    return [p for sub in ("new", "cur") if (root / sub).is_dir() for p in (root / sub).iterdir()]


def test_reject_quarantine_and_the_domain_switch(master: tuple[Master, LoopbackDNS]) -> None:
    m, _ = master
    code, text = send(m, "ceo@bank.test", "CEO <ceo@bank.test>")
    assert code == 550 and b"5.7.1" in text
    assert re.search(r": spf=fail dkim=none dmarc=fail \(p=reject dis=reject from=bank.test\) arc=none, "
                     r"action=refused 550",
                     m.log())

    code, text = send(m, "deals@shop.test", "deals@shop.test")
    assert code == 250
    qid = re.search(rb"queued as ([0-9A-Z]+)", text).group(1).decode()
    wait_for(lambda: f"{qid}: removed" in m.log(), 30, "delivery")
    assert f"{qid}: spf=fail dkim=none dmarc=fail (p=quarantine dis=quarantine from=shop.test) arc=none, action=junk" \
        in m.log()
    (junk,) = junk_files(m)
    assert junk.read_bytes().startswith(b"Return-Path: <deals@shop.test>")
    assert b"Authentication-Results: mx.test.example;" in junk.read_bytes()
    assert m.maildir_files() == []

    out = cli(m.data_dir, "domain", "set", "acme.example", "--dmarc-enforce", "sideways")
    assert out.returncode == 2 and "on, off or inherit" in out.stderr
    out = cli(m.data_dir, "domain", "set", "acme.example", "--dmarc-enforce", "off")
    assert out.returncode == 0, out.stderr
    # the smtpd worker sees the directory change at its next check
    wait_for(lambda: send(m, "ceo@bank.test", "ceo@bank.test")[0] == 250, 20, "enforcement off")
    wait_for(lambda: len(m.maildir_files()) == 1, 30, "delivery to INBOX")
    # the domain follows its tenant again (enforcing: mx.dmarc_enforce), then the tenant turns it off
    assert cli(m.data_dir, "domain", "set", "acme.example", "--dmarc-enforce", "inherit").returncode == 0
    wait_for(lambda: send(m, "ceo@bank.test", "ceo@bank.test")[0] == 550, 20, "enforcement back on")
    out = cli(m.data_dir, "tenant", "set", "acme", "--dmarc-enforce", "off")
    assert out.returncode == 0 and "off (tenant setting)" in out.stdout, out.stderr
    wait_for(lambda: send(m, "ceo@bank.test", "ceo@bank.test")[0] == 250, 20, "enforcement off for the tenant")
