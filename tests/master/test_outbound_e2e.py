"""Mail leaving through the master: submission with AUTH over STARTTLS, alias forwarding, DKIM, relay."""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import Master, RelaySink, cli, free_port, relay_sink, wait_for


@pytest.fixture
def sink() -> Iterator[tuple[RelaySink, int]]:
    with relay_sink() as made:
        yield made


@pytest.fixture
def master(tmp_path: Path, sink: tuple[RelaySink, int]) -> Iterator[Master]:
    m = Master.create(tmp_path)
    out = cli(m.data_dir, "transport", "set", "default", "*", "--relay", f"127.0.0.1:{sink[1]}", "--tls", "none")
    assert out.returncode == 0, out.stderr
    assert cli(m.data_dir, "alias", "add", "fwd@acme.example", "partner@remote.example").returncode == 0
    m.submission_port = free_port()
    m.start("--submission", f"127.0.0.1:{m.submission_port}")
    yield m
    m.stop()
    m.cleanup()


def test_alias_to_an_external_address_is_relayed(master: Master, sink: tuple[RelaySink, int]) -> None:
    handler, _ = sink
    with master.smtp() as s:
        s.sendmail("alice@ext.example", ["fwd@acme.example"], "Subject: forward me\r\n\r\nx\r\n")
    wait_for(lambda: handler.messages, 30, "relayed message")
    sender, rcpts, data = handler.messages[0]
    assert rcpts == ["partner@remote.example"] and sender == "alice@ext.example"
    assert b"Subject: forward me" in data


def test_submission_needs_tls_and_auth_then_signs_and_relays(master: Master, sink: tuple[RelaySink, int]) -> None:
    handler, _ = sink
    msg = "From: bob@acme.example\r\nTo: someone@remote.example\r\nSubject: outbound\r\n\r\nhello\r\n"
    with smtplib.SMTP("127.0.0.1", master.submission_port, timeout=30) as s:
        with pytest.raises(smtplib.SMTPException):
            s.sendmail("bob@acme.example", ["someone@remote.example"], msg)  # no AUTH: refused
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.1", master.submission_port, timeout=30) as s:
        s.starttls(context=ctx)
        with pytest.raises(smtplib.SMTPAuthenticationError):
            s.login("bob@acme.example", "wrong")
    with smtplib.SMTP("127.0.0.1", master.submission_port, timeout=30) as s:
        s.starttls(context=ctx)
        s.login("bob@acme.example", "secret")
        with pytest.raises(smtplib.SMTPSenderRefused):  # not this tenant's domain
            s.sendmail("ceo@other.example", ["someone@remote.example"], msg.replace("bob@acme", "ceo@other"))
        s.sendmail("bob@acme.example", ["someone@remote.example"], msg)
    wait_for(lambda: handler.messages, 30, "relayed message")
    sender, rcpts, data = handler.messages[0]
    assert (sender, rcpts) == ("bob@acme.example", ["someone@remote.example"])
    assert data.count(b"DKIM-Signature:") == 2 and b"d=acme.example" in data  # RSA and Ed25519
    assert "relay=127.0.0.1" in master.log() and "status=sent" in master.log()
