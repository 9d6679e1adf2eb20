"""Delivery outcomes as signed webhooks, through the master: the send API queues, the relay hands the
message to a sink that accepts, defers or refuses each recipient, and the receiver gets
``message.delivered`` / ``message.deferred`` / ``message.bounced`` / ``message.suppressed``. A DSN that
arrives later at the VERP return path (``bounce+<token>@``) over our MX is matched to its campaign;
one with a forged token changes nothing.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import email.utils
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..replies.receiver import Receiver
from .harness import Master, RelaySink, cli, free_port, relay_sink, wait_for

CARL, DAVE, ERIN = "carl@ext.example", "dave@ext.example", "erin@ext.example"


def ok(m: Master, *args: str) -> str:
    out = cli(m.data_dir, *args)
    assert out.returncode == 0, out.stderr
    return out.stdout


class Setup:
    def __init__(self, master: Master, http: int, api_token: str, receiver: Receiver, sink: RelaySink) -> None:
        self.master, self.http, self.api_token, self.receiver, self.sink = master, http, api_token, receiver, sink

    def send(self, to: str, campaign: str, contact: str | None = None) -> dict[str, Any]:
        body = {"from": "News <news@acme.example>", "to": [to], "subject": f"Offer {campaign}",
                "text": "Our offer.", "campaign": campaign, **({"contact": contact} if contact else {})}
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.http}/api/v1/messages", data=json.dumps(body).encode(), method="POST",
            headers={"Authorization": f"Bearer {self.api_token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.status == 202
            return json.loads(resp.read())

    def events(self, etype: str, recipient: str, count: int = 1) -> list[dict[str, Any]]:
        """The verified events of ``etype`` about ``recipient``, once ``count`` of them have arrived."""
        def found() -> list[dict[str, Any]] | None:
            got = [e for e in self.receiver.received if e["type"] == etype and e["data"]["recipient"] == recipient]
            return got if len(got) >= count else None
        got = wait_for(found, 60, f"{count} {etype} for {recipient}")
        assert not self.receiver.rejected  # every request carried a valid Standard Webhooks signature
        return got

    def stored_events(self, etype: str) -> list[dict[str, Any]]:
        """Webhook deliveries of ``etype`` in the outbox (whether posted yet or not)."""
        rows = json.loads(ok(self.master, "webhooks", "deliveries", "--tenant", "acme", "--json"))
        return [r for r in rows if r["type"] == etype]

    def replies(self) -> list[dict[str, Any]]:
        return json.loads(ok(self.master, "replies", "list", "--tenant", "acme", "--json"))

    def dsn_over_mx(self, to: str, recipient: str, status: str, diagnostic: str) -> None:
        """An RFC 3464 DSN from a remote MTA, days after the message left, sent to ``to`` over our MX."""
        boundary = "b0undary"
        text = (f"From: Mail Delivery System <MAILER-DAEMON@mx.ext.example>\r\nTo: {to}\r\n"
                f"Subject: Undelivered Mail Returned to Sender\r\nDate: {email.utils.formatdate()}\r\n"
                f"Message-ID: {email.utils.make_msgid(domain='mx.ext.example')}\r\nMIME-Version: 1.0\r\n"
                f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"\r\n\r\n'
                f"--{boundary}\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
                f"--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n"
                f"Reporting-MTA: dns; mx.ext.example\r\n\r\n"
                f"Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: {status}\r\n"
                f"Remote-MTA: dns; store.ext.example\r\nDiagnostic-Code: smtp; {diagnostic}\r\n\r\n"
                f"--{boundary}--\r\n")
        with self.master.smtp() as s:
            s.sendmail("", [to], text.encode())


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    with relay_sink() as (sink, sink_port):
        sink.rcpt_replies = {DAVE: "451 4.2.0 Mailbox busy, try later", ERIN: "550 5.1.1 No such user here"}
        m = Master.create(tmp_path)
        ok(m, "config", "set", "replies.webhook_allow_private=true")  # the receiver is on loopback
        ok(m, "transport", "set", "default", "*", "--relay", f"127.0.0.1:{sink_port}", "--tls", "none")
        api_token = json.loads(ok(m, "token", "add", "--tenant", "acme", "--json"))["token"]
        receiver = Receiver().start()
        endpoint = json.loads(ok(m, "webhooks", "add", "--tenant", "acme", receiver.url, "--json",
                                 *[a for t in ("message.delivered", "message.deferred", "message.bounced",
                                               "message.suppressed", "message.complained") for a in ("-e", t)]))
        receiver.secret = endpoint["secret"]
        http = free_port()
        m.start("--http", f"127.0.0.1:{http}")
        try:
            yield Setup(m, http, api_token, receiver, sink)
        finally:
            receiver.stop()
            m.stop()
            m.cleanup()


@pytest.mark.timeout(300)  # the whole server, three sends, and a CLI process per look at the outbox
def test_delivered_deferred_and_bounced_become_signed_webhooks(setup: Setup) -> None:
    sent = setup.send(CARL, "spring", contact="c-17")
    (delivered,) = setup.events("message.delivered", CARL)
    data = delivered["data"]
    assert data["message_id"] == sent["message_id"] and data["campaign"]["name"] == "spring"
    assert data["contact"] == "c-17" and data["attempt"] == 1
    assert data["relay"]["queue_id"] == "SINK1" and data["relay"]["host"].startswith("127.0.0.1")
    assert data["response"]["status"] == "2.0.0" and "queued as SINK1" in data["response"]["text"]
    # The message left with the VERP return path, which routes to the tenant's replies intake.
    (mail_from,) = {s for s, rcpts, _ in setup.sink.messages if CARL in rcpts}
    assert mail_from.startswith("bounce+") and mail_from.endswith("@acme.example")
    routed = ok(setup.master, "resolve", "-v", mail_from)
    assert "bounce (VERP) token -> replies intake of tenant acme" in routed

    before = dt.datetime.now(dt.UTC)
    deferred_sent = setup.send(DAVE, "spring")
    first, second = sorted(setup.events("message.deferred", DAVE, 2), key=lambda e: e["data"]["attempt"])[:2]
    assert first["data"]["message_id"] == deferred_sent["message_id"]
    assert (first["data"]["attempt"], second["data"]["attempt"]) == (1, 2)
    assert first["data"]["response"] == {"status": "4.2.0", "text": first["data"]["response"]["text"]}
    assert "Mailbox busy" in first["data"]["response"]["text"]
    next_try = dt.datetime.fromisoformat(first["data"]["next_attempt_at"])
    assert before < next_try < before + dt.timedelta(minutes=5)  # the harness's queue.minimal_backoff is 1 s

    bounced_sent = setup.send(ERIN, "spring")
    (bounced,) = setup.events("message.bounced", ERIN)
    assert bounced["data"]["message_id"] == bounced_sent["message_id"]
    assert bounced["data"]["bounce"]["type"] == "hard" and bounced["data"]["bounce"]["status"] == "5.1.1"
    assert "No such user here" in bounced["data"]["bounce"]["diagnostic"]
    # Our own queue returned a DSN to the VERP address: it is matched, but fires no second event.
    wait_for(lambda: [r for r in setup.replies() if r["kind"] == "bounce" and r["match_method"] == "verp"], 60,
             "our DSN stored by the replies engine")
    assert len(setup.stored_events("message.bounced")) == 1
    # Erin is suppressed now: the next send leaves her out and says so.
    again = setup.send(ERIN, "summer")
    assert again["suppressed"] == [ERIN] and again["accepted"] == []
    (suppressed,) = setup.events("message.suppressed", ERIN)
    assert suppressed["data"]["suppression"]["reason"] == "hard_bounce"
    assert suppressed["data"]["campaign"]["name"] == "summer"


@pytest.mark.timeout(300)  # the whole server, four messages over the MX, a CLI process per look
def test_a_dsn_at_the_verp_address_days_later_bounces_its_campaign_message(setup: Setup) -> None:
    sent = setup.send(CARL, "autumn", contact="c-9")
    setup.events("message.delivered", CARL)
    (mail_from,) = {s for s, rcpts, _ in setup.sink.messages if CARL in rcpts}

    # A forged token at the same domain: stored, but no event and nobody suppressed.
    forged = "bounce+" + "a" * 32 + "@acme.example"
    setup.dsn_over_mx(forged, CARL, "5.1.1", "550 5.1.1 user unknown")
    wait_for(lambda: [r for r in setup.replies() if r["kind"] == "bounce"], 60, "the forged bounce stored")
    assert setup.stored_events("message.bounced") == []
    assert setup.send(CARL, "autumn")["suppressed"] == []

    setup.dsn_over_mx(mail_from, CARL, "5.2.1", "550 5.2.1 mailbox disabled")
    (bounced,) = setup.events("message.bounced", CARL)
    data = bounced["data"]
    assert data["message_id"] == sent["message_id"] and data["campaign"]["name"] == "autumn"
    assert data["contact"] == "c-9"
    assert data["bounce"] == {**data["bounce"], "type": "hard", "status": "5.2.1", "source": "dsn",
                              "remote_mta": "store.ext.example", "reporting_mta": "mx.ext.example"}
    assert "mailbox disabled" in data["bounce"]["diagnostic"]
    # The same DSN again (a retrying remote MTA) fires nothing more.
    setup.dsn_over_mx(mail_from, CARL, "5.2.1", "550 5.2.1 mailbox disabled")
    wait_for(lambda: len([r for r in setup.replies() if r["match_method"] == "verp"]) >= 2, 60, "second DSN")
    assert len(setup.stored_events("message.bounced")) == 1
    assert setup.send(CARL, "winter")["suppressed"] == [CARL]


def test_subscribing_to_an_unknown_event_type_is_refused_and_saves_nothing(setup: Setup) -> None:
    before = json.loads(ok(setup.master, "webhooks", "list", "--tenant", "acme", "--json"))
    out = cli(setup.master.data_dir, "webhooks", "add", "--tenant", "acme", "https://hooks.example/in",
              "-e", "message.delivered", "-e", "message.exploded")
    assert out.returncode == 2 and "message.exploded" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    req = urllib.request.Request(
        f"http://127.0.0.1:{setup.http}/api/v1/webhooks/endpoints", method="POST",
        data=json.dumps({"url": "https://hooks.example/in", "event_types": ["message.exploded"]}).encode(),
        headers={"Authorization": f"Bearer {setup.api_token}", "Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=30)
    assert refused.value.code == 422
    problem = json.loads(refused.value.read())
    assert refused.value.headers["content-type"].startswith("application/problem+json")
    assert "message.exploded" in problem["detail"]
    assert json.loads(ok(setup.master, "webhooks", "list", "--tenant", "acme", "--json")) == before
