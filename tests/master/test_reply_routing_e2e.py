"""Reply tracking with no setup, through the master: the send API stamps ``reply+<token>@`` and
``unsubscribe+<token>@`` of the sender's domain, the relay hands the message to a sink, and the
recipient's answer to those addresses comes back over our MX, is routed to the tenant's replies
intake (no reply inbox made, no catch-all) and leaves as a signed webhook threaded to the campaign.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..replies.receiver import Receiver
from .harness import Master, RelaySink, cli, free_port, wait_for

CARL = "carl@ext.example"


def ok(m: Master, *args: str) -> str:
    out = cli(m.data_dir, *args)
    assert out.returncode == 0, out.stderr
    return out.stdout


class Setup:
    def __init__(self, master: Master, http: int, api_token: str, receiver: Receiver, handler: RelaySink) -> None:
        self.master, self.http, self.api_token, self.receiver, self.handler = master, http, api_token, receiver, handler

    def send(self, **body: Any) -> dict[str, Any]:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.http}/api/v1/messages", data=json.dumps(body).encode(), method="POST",
            headers={"Authorization": f"Bearer {self.api_token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.status == 202
            return json.loads(resp.read())

    def sunk(self, message_id: str) -> email.message.EmailMessage:
        """The message the relay handed to the sink, by its Message-ID."""
        def find() -> email.message.EmailMessage | None:
            for _sender, _rcpts, data in self.handler.messages:
                msg = email.message_from_bytes(data, policy=email.policy.default)
                if msg["Message-ID"] == message_id:
                    return msg  # type: ignore[return-value]
            return None
        return wait_for(find, 60, f"{message_id} at the sink")

    def answer(self, to: str, subject: str, body: str) -> None:
        with self.master.smtp() as s:  # a refused RCPT would raise SMTPRecipientsRefused
            s.sendmail(CARL, [to], f"From: Carl <{CARL}>\r\nTo: {to}\r\nSubject: {subject}\r\n"
                                   f"Message-ID: {email.utils.make_msgid(domain='ext.example')}\r\n\r\n{body}\r\n")

    def events(self, count: int) -> list[dict[str, Any]]:
        got = self.receiver.wait_for(count, timeout=60)
        assert len({e["id"] for e in got}) >= count, got
        assert not self.receiver.rejected  # every request carried a valid Standard Webhooks signature
        return list({e["id"]: e for e in got}.values())


@pytest.fixture
def setup(tmp_path: Path, sink: tuple[RelaySink, int]) -> Iterator[Setup]:  # noqa: F811
    handler, sink_port = sink
    m = Master.create(tmp_path)
    ok(m, "config", "set", "replies.webhook_allow_private=true")  # the receiver is on loopback
    ok(m, "transport", "set", "default", "*", "--relay", f"127.0.0.1:{sink_port}", "--tls", "none")
    ok(m, "tenant", "add", "globex")
    ok(m, "domain", "add", "globex.example", "--tenant", "globex")
    api_token = json.loads(ok(m, "token", "add", "--tenant", "acme", "--json"))["token"]
    receiver = Receiver().start()
    # Subscribed to what replies fire: the delivery outcomes (message.*) of the sends are not this test's.
    endpoint = json.loads(ok(m, "webhooks", "add", "--tenant", "acme", receiver.url, "--json",
                             *[a for t in ("reply.received", "reply.unmatched", "unsubscribe") for a in ("-e", t)]))
    receiver.secret = endpoint["secret"]
    http = free_port()
    m.start("--http", f"127.0.0.1:{http}")
    try:
        yield Setup(m, http, api_token, receiver, handler)
    finally:
        receiver.stop()
        m.stop()
        m.cleanup()


def test_reply_and_unsubscribe_addresses_route_to_the_replies_engine_without_setup(setup: Setup) -> None:
    routed = ok(setup.master, "resolve", "-v", "reply+abc@acme.example")  # exit 0: routed with no catch-all
    assert "reply token -> replies intake of tenant acme" in routed and "/mail/acme/_replies" in routed
    sent = setup.send(**{"from": "News <news@acme.example>", "to": [CARL], "subject": "Spring offer",
                         "text": "Our spring offer.", "campaign": "spring", "track_replies": True})
    msg = setup.sunk(sent["message_id"])
    reply_to = email.utils.parseaddr(str(msg["Reply-To"]))[1]
    (unsubscribe,) = re.findall(r"<mailto:([^>]+)>", str(msg["List-Unsubscribe"]))
    token = sent["reply_token"]
    assert reply_to == f"reply+{token}@acme.example" and unsubscribe == f"unsubscribe+{token}@acme.example"

    # A reply with no In-Reply-To or References: only the token in the address can thread it.
    setup.answer(reply_to, "Re: your message", "Yes, tell me more.")
    (event,) = setup.events(1)
    assert event["type"] == "reply.received"
    data = event["data"]
    assert data["campaign"]["name"] == "spring"
    assert data["outbound_message"]["message_id"].strip("<>") == sent["message_id"].strip("<>")
    assert data["reply"]["match"] == {"method": "token", "strength": "strong"}
    assert data["reply"]["kind"] == "human" and data["reply"]["stripped_text"].strip() == "Yes, tell me more."

    setup.answer(unsubscribe, "unsubscribe", "")
    events = setup.events(2)
    (unsub,) = [e for e in events if e["id"] != event["id"]]
    assert unsub["type"] == "unsubscribe"
    assert unsub["data"]["campaign"]["name"] == "spring"
    assert unsub["data"]["reply"]["match"]["method"] == "token"
    # The unsubscribe put Carl on the tenant's suppression list, which the send API honours.
    again = setup.send(**{"from": "news@acme.example", "to": [CARL], "subject": "Summer offer", "text": "x",
                          "campaign": "summer", "track_replies": True})
    assert again["suppressed"] == [CARL] and again["accepted"] == []

    # Nothing went to an ordinary mailbox.
    assert setup.master.maildir_files() == []


def test_a_forged_token_or_another_tenants_token_never_threads(setup: Setup) -> None:
    sent = setup.send(**{"from": "news@acme.example", "to": [CARL], "subject": "Spring offer",
                         "text": "Our spring offer.", "campaign": "spring", "track_replies": True})
    token = sent["reply_token"]
    forged = token[:-4] + ("aaaa" if not token.endswith("aaaa") else "bbbb")
    # Acme's token at Globex's domain goes to Globex's intake, where its MAC does not verify.
    setup.answer(f"reply+{token}@globex.example", "Hello", "Wrong door.")
    wait_for(lambda: json.loads(ok(setup.master, "replies", "list", "--tenant", "globex", "--json")), 60,
             "the reply stored for globex")
    (at_globex,) = json.loads(ok(setup.master, "replies", "list", "--tenant", "globex", "--json"))
    assert at_globex["campaign_id"] is None and at_globex["match_method"] == "none"

    # A forged token at Acme's own domain: accepted, stored and emitted as an unmatched reply.
    setup.answer(f"reply+{forged}@acme.example", "Hello", "Who are you?")
    (event,) = setup.events(1)
    assert event["type"] == "reply.unmatched"
    assert event["data"]["campaign"] is None and event["data"]["outbound_message"] is None
    assert event["data"]["reply"]["stripped_text"].strip() == "Who are you?"
    # Acme heard of the forged reply only: the one at Globex's door stayed Globex's.
    assert {e["id"] for e in setup.receiver.received} == {event["id"]}
