"""RFC 8058 one-click unsubscribe through the master, end to end: the send API stamps both List-Unsubscribe
forms (DKIM-signed with List-Unsubscribe-Post), the relay hands the message to a sink, the link taken out of
the sunk message is POSTed to the running web listener as a mail provider would (no cookie, no login), and
the recipient lands on the suppression list with one signed ``unsubscribe`` webhook. The ``mailto:`` form
comes back over our MX and is reported once between the two.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import json
import re
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dkim
import httpx
import pytest

from ..replies.receiver import Receiver
from .harness import Master, RelaySink, cli, free_port, relay_sink, wait_for

PUBLIC = "https://mail.acme.example"
ONE_CLICK = {"List-Unsubscribe": "One-Click"}


def ok(m: Master, *args: str) -> str:
    out = cli(m.data_dir, *args)
    assert out.returncode == 0, out.stderr
    return out.stdout


class Stack:
    def __init__(self, master: Master, http: int, api_token: str, receiver: Receiver, sink: RelaySink) -> None:
        self.master, self.http, self.api_token, self.receiver, self.sink = master, http, api_token, receiver, sink
        self.web = httpx.Client(base_url=f"http://127.0.0.1:{http}", timeout=30)

    def send(self, to: str, campaign: str = "spring") -> dict[str, Any]:
        r = self.web.post("/api/v1/messages", headers={"Authorization": f"Bearer {self.api_token}"},
                          json={"from": "News <news@acme.example>", "to": [to], "subject": f"{campaign} offer",
                                "text": "Our offer.", "campaign": campaign, "track_replies": True})
        assert r.status_code == 202, r.text
        return r.json()

    def sunk(self, message_id: str) -> bytes:
        def find() -> bytes | None:
            with self.sink.lock:
                for _sender, _rcpts, data in self.sink.messages:
                    if email.message_from_bytes(data, policy=email.policy.default)["Message-ID"] == message_id:
                        return data
            return None
        return wait_for(find, 60, f"{message_id} at the sink")

    def links(self, data: bytes) -> tuple[str, str]:
        """(the https one-click URL, the mailto address) of a sunk message's List-Unsubscribe."""
        msg = email.message_from_bytes(data, policy=email.policy.default)
        (https, mailto) = re.fullmatch(r"<(https://[^>]+)>, <mailto:([^>]+)>", str(msg["List-Unsubscribe"])).groups()
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        return https, mailto

    def on_listener(self, url: str) -> str:
        """The public URL's path on our web listener (the operator's TLS proxy does this in production)."""
        parts = urllib.parse.urlsplit(url)
        assert f"{parts.scheme}://{parts.netloc}" == PUBLIC
        return parts.path

    def deliveries(self) -> list[dict[str, Any]]:
        """The webhook outbox of acme: every delivery ever queued, whatever its state."""
        return json.loads(ok(self.master, "webhooks", "deliveries", "--tenant", "acme", "--json"))

    def suppressed(self) -> dict[str, str]:
        r = self.web.get("/api/v1/suppressions", headers={"Authorization": f"Bearer {self.api_token}"})
        assert r.status_code == 200, r.text
        return {s["address"]: s["reason"] for s in r.json()["items"]}

    def events(self, count: int) -> list[dict[str, Any]]:
        got = self.receiver.wait_for(count, timeout=60)
        assert not self.receiver.rejected  # every request carried a valid Standard Webhooks signature
        return list({e["id"]: e for e in got}.values())


def start(tmp_path: Path, sink_port: int, *settings: str) -> tuple[Master, int, str, Receiver]:
    m = Master.create(tmp_path)
    for setting in ("replies.webhook_allow_private=true", *settings):  # the receiver is on loopback
        ok(m, "config", "set", setting)
    ok(m, "transport", "set", "default", "*", "--relay", f"127.0.0.1:{sink_port}", "--tls", "none")
    api_token = json.loads(ok(m, "token", "add", "--tenant", "acme", "--json"))["token"]
    receiver = Receiver().start()
    # The reply-side events only: delivery outcomes (message.*) have their own tests.
    receiver.secret = json.loads(ok(m, "webhooks", "add", "--tenant", "acme", receiver.url, "--json",
                                    *[a for e in ("unsubscribe", "reply.received", "reply.auto", "reply.unmatched",
                                                  "bounce.hard", "bounce.soft", "complaint") for a in ("--event", e)]
                                    ))["secret"]
    http = free_port()
    m.start("--http", f"127.0.0.1:{http}")
    return m, http, api_token, receiver


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with relay_sink() as (sink, sink_port):
        m, http, api_token, receiver = start(tmp_path, sink_port, f"web.public_url={PUBLIC}/")
        s = Stack(m, http, api_token, receiver, sink)
        try:
            yield s
        finally:
            s.web.close()
            receiver.stop()
            m.stop()
            m.cleanup()


def assert_dkim_covers_list_unsubscribe(data: bytes, master: Master) -> None:
    records = {f"{k['record']}.": k["txt"].encode()
               for k in json.loads(ok(master, "dkim", "list", "acme.example", "--json"))}

    def dnsfunc(name: bytes | str, timeout: int = 5) -> bytes | None:
        return records.get(name.decode() if isinstance(name, bytes) else name)

    msg = email.message_from_bytes(data, policy=email.policy.compat32)
    signatures = msg.get_all("DKIM-Signature") or []
    assert len(signatures) == 2
    for i, sig in enumerate(signatures):
        signed = re.search(r"\bh=([^;]+)", re.sub(r"\s+", "", sig)).group(1).lower().split(":")
        assert "list-unsubscribe" in signed and "list-unsubscribe-post" in signed
        assert dkim.DKIM(data).verify(idx=i, dnsfunc=dnsfunc)


def test_one_click_link_unsubscribes_once_and_get_never_does(stack: Stack) -> None:
    carl = "carl@ext.example"
    sent = stack.send(carl)
    data = stack.sunk(sent["message_id"])
    https, mailto = stack.links(data)
    assert mailto == f"unsubscribe+{sent['reply_token']}@acme.example"
    assert https.startswith(f"{PUBLIC}/unsubscribe/") and carl not in https  # the address is not in the URL
    assert_dkim_covers_list_unsubscribe(data, stack.master)
    path = stack.on_listener(https)

    # A mail scanner or the recipient opening the link: a page with a button, and nothing changes.
    page = stack.web.get(path, headers={"Accept": "text/html"})
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert carl in page.text and 'name="List-Unsubscribe" value="One-Click"' in page.text
    assert 'method="post"' in page.text
    assert stack.suppressed() == {} and stack.deliveries() == []

    # The mail provider's one-click POST: no cookie, no login, no CSRF token, never a redirect.
    first = httpx.post(f"{stack.web.base_url}{path}", data=ONE_CLICK, timeout=30, follow_redirects=False)
    assert first.status_code == 200, first.text
    assert stack.suppressed() == {carl: "unsubscribe"}
    (event,) = stack.events(1)
    assert event["type"] == "unsubscribe" and event["tenant"] == "acme"
    assert event["data"]["unsubscribe"] == {"address": carl, "method": "one-click"}
    assert event["data"]["campaign"]["name"] == "spring"
    assert event["data"]["outbound_message"]["message_id"].strip("<>") == sent["message_id"].strip("<>")

    # Again (a retrying client, or the button on the page): the same answer, nothing more to report.
    again = httpx.post(f"{stack.web.base_url}{path}", data=ONE_CLICK, timeout=30)
    assert (again.status_code, again.text) == (first.status_code, first.text)
    assert [d["event_id"] for d in stack.deliveries()] == [event["id"]]
    # The page's own button posts form-encoded from a browser and gets a page back.
    button = stack.web.post(path, data=ONE_CLICK, headers={"Accept": "text/html"})
    assert button.status_code == 200 and "is unsubscribed" in button.text
    assert [d["event_id"] for d in stack.deliveries()] == [event["id"]]

    # The send API honours it.
    later = stack.send(carl, campaign="summer")
    assert later["suppressed"] == [carl] and later["accepted"] == []


def test_forged_malformed_or_bodiless_requests_are_refused_and_suppress_nobody(stack: Stack) -> None:
    sent = stack.send("dora@ext.example")
    path = stack.on_listener(stack.links(stack.sunk(sent["message_id"]))[0])
    token = path.rsplit("/", 1)[1]
    forged = token[:30] + ("a" if token[30] != "a" else "b") + token[31:]
    for bad in (forged, token[:-3], "reply-token-guess", sent["reply_token"]):
        r = httpx.post(f"{stack.web.base_url}/unsubscribe/{bad}", data=ONE_CLICK, timeout=30)
        assert r.status_code == 404, (bad, r.text)
        assert r.headers["content-type"].startswith("application/problem+json") and "not valid" in r.json()["detail"]
        page = stack.web.get(f"/unsubscribe/{bad}", headers={"Accept": "text/html"})
        assert page.status_code == 404 and "not valid" in page.text and "<form" not in page.text
    # RFC 8058's body is required: a bare POST (a link checker, a mistaken client) unsubscribes nobody.
    for body in ({}, {"List-Unsubscribe": "one-click-please"}):
        r = httpx.post(f"{stack.web.base_url}{path}", data=body, timeout=30)
        assert r.status_code == 400 and "List-Unsubscribe=One-Click" in r.json()["detail"]
    assert stack.suppressed() == {} and stack.deliveries() == []


def test_mailto_form_over_the_mx_and_the_link_report_one_unsubscribe(stack: Stack) -> None:
    erin = "erin@ext.example"
    sent = stack.send(erin)
    https, mailto = stack.links(stack.sunk(sent["message_id"]))
    with stack.master.smtp() as s:  # the recipient's mail client uses the mailto: form
        s.sendmail(erin, [mailto], f"From: <{erin}>\r\nTo: <{mailto}>\r\nSubject: unsubscribe\r\n"
                                   f"Message-ID: {email.utils.make_msgid(domain='ext.example')}\r\n\r\n\r\n")
    (event,) = stack.events(1)
    assert event["type"] == "unsubscribe" and event["data"]["unsubscribe"] == {"address": erin, "method": "mailto"}
    assert event["data"]["campaign"]["name"] == "spring"
    assert stack.suppressed() == {erin: "unsubscribe"}
    # The same person also presses one-click: answered as usual, no second report.
    r = httpx.post(f"{stack.web.base_url}{stack.on_listener(https)}", data=ONE_CLICK, timeout=30)
    assert r.status_code == 200, r.text
    assert [d["event_id"] for d in stack.deliveries()] == [event["id"]]


def test_without_a_public_url_only_the_mailto_form_and_serve_and_status_say_why(tmp_path: Path) -> None:
    with relay_sink() as (sink, sink_port):
        m, http, api_token, receiver = start(tmp_path, sink_port)
        s = Stack(m, http, api_token, receiver, sink)
        try:
            sent = s.send("fred@ext.example")
            msg = email.message_from_bytes(s.sunk(sent["message_id"]), policy=email.policy.default)
            assert str(msg["List-Unsubscribe"]).strip() == f"<mailto:unsubscribe+{sent['reply_token']}@acme.example>"
            assert msg["List-Unsubscribe-Post"] is None
            assert "one-click unsubscribe (RFC 8058) is off: web.public_url is not set" in m.log()
            status = json.loads(ok(m, "status", "--json"))["one_click_unsubscribe"]
            assert status["enabled"] is False and "web.public_url is not set" in status["reason"]
            assert "unsubscribe: one-click unsubscribe (RFC 8058) is off" in ok(m, "status")
            ok(m, "config", "set", f"web.public_url={PUBLIC}")
            assert f"unsubscribe: one-click on at {PUBLIC}/unsubscribe/<token>" in ok(m, "status")
        finally:
            s.web.close()
            receiver.stop()
            m.stop()
            m.cleanup()
