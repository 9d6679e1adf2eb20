"""Mail leaving through the master: submission with AUTH over STARTTLS, alias forwarding, DKIM, relay."""

from __future__ import annotations

import json
import re
import smtplib
import ssl
from collections.abc import Iterator
from pathlib import Path

import dkim
import pytest

from .harness import Master, RelaySink, cli, free_port, relay_everything_to, wait_for


@pytest.fixture
def master(tmp_path: Path, sink: tuple[RelaySink, int]) -> Iterator[Master]:
    m = Master.create(tmp_path)
    relay_everything_to(m, sink[1])
    assert cli(m.data_dir, "alias", "add", "fwd@acme.example", "partner@remote.example").returncode == 0
    m.submission_port = free_port()
    m.start("--submission", f"127.0.0.1:{m.submission_port}")
    yield m
    m.stop()
    m.cleanup()


def _dkimpy_dns(data_dir: Path):  # noqa: ANN202
    """dkimpy's ``dnsfunc`` answering with the DKIM records of the master's domains."""
    out = cli(data_dir, "dkim", "list", "--json")
    assert out.returncode == 0, out.stderr
    records = {f"{k['selector']}._domainkey.{k['domain']}.": k["txt"].encode() for k in json.loads(out.stdout)}

    def dnsfunc(name: bytes | str, timeout: int = 5) -> bytes | None:
        qname = name.decode() if isinstance(name, bytes) else name
        return records.get(qname if qname.endswith(".") else qname + ".")

    return dnsfunc


def test_alias_to_an_external_address_is_relayed_with_srs_and_an_arc_seal(
        master: Master, sink: tuple[RelaySink, int]) -> None:
    handler, _ = sink
    with master.smtp() as s:
        s.sendmail("alice@ext.example", ["fwd@acme.example"],
                   "From: alice@ext.example\r\nTo: fwd@acme.example\r\nSubject: forward me\r\n\r\nx\r\n")
    wait_for(lambda: handler.messages, 30, "relayed message")
    sender, rcpts, data = handler.messages[0]
    assert rcpts == ["partner@remote.example"]
    # the envelope sender is ours (SPF passes at the destination), and a bounce finds its way back
    assert re.fullmatch(r"SRS0=[A-Za-z0-9+/]{4}=[A-Z2-7]{2}=ext\.example=alice@acme\.example", sender), sender
    assert b"Subject: forward me" in data
    assert data.startswith(b"ARC-Seal: i=1; a=rsa-sha256; ") and b"cv=none" in data.split(b"\r\n")[0]
    cv, _, reason = dkim.arc_verify(data, dnsfunc=_dkimpy_dns(master.data_dir))
    assert cv == b"pass", reason
    assert "forwarded by acme.example: sender=<SRS0=" in master.log()

    # the destination bounces it: the DSN to the SRS address is routed back to alice
    dsn = "From: MAILER-DAEMON@remote.example\r\nSubject: Undelivered Mail\r\n\r\nno such user\r\n"
    with master.smtp() as s:
        s.sendmail("", [sender], dsn)
    wait_for(lambda: len(handler.messages) >= 2, 30, "returned bounce")
    bounce_sender, bounce_rcpts, bounce = handler.messages[1]
    assert (bounce_sender, bounce_rcpts) == ("<>", ["alice@ext.example"])  # the sink writes the null sender so
    assert b"Subject: Undelivered Mail" in bounce

    # a forged SRS address relays nothing
    forged = sender.replace("=alice@", "=mallory@")
    with master.smtp() as s, pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        s.sendmail("", [forged], dsn)
    code, text = refused.value.recipients[forged]
    assert code == 550 and b"5.7.1" in text and b"invalid SRS address" in text


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
