"""The pipeline end to end on a real database: threading order, idempotency, suppression, events."""

from __future__ import annotations

import datetime as dt
import json
import os

import pytest
import sqlalchemy as sa

from dovetail.replies.pipeline import Source
from dovetail.replies.schema import events, webhook_deliveries
from dovetail.replies.service import RepliesService
from dovetail.sealing import Sealer

from .mails import reply

SENT = dt.datetime(2026, 1, 2, 9, 0)


@pytest.fixture
def two(service: RepliesService):  # noqa: ANN201
    reg = service.registry
    camp = reg.create_campaign("acme", "Q1")
    a = reg.register_outbound("acme", camp.id, message_id="<a@acme.example>", recipient="anna@client.example",
                              subject="Quick question", sent_at=SENT)
    b = reg.register_outbound("acme", camp.id, message_id="<b@acme.example>", recipient="bob@client.example",
                              subject="Another thing", sent_at=SENT)
    return camp, a, b


def src(name: str = "test", uid: int | None = None) -> Source:
    return Source("acme", name, uidvalidity=7 if uid else None, uid=uid)


def test_threading_order_headers_beat_token_beat_subject(service: RepliesService, two) -> None:  # noqa: ANN001
    camp, a, b = two
    # References name A, the token names B: headers win.
    r = service.process_message(reply(references="<x@elsewhere> <a@acme.example>",
                                      to=f"reply+{b.reply_token}@in.acme.example", message_id="<r1@c>"), src())
    assert (r.outbound_id, r.match_method, r.match_strength) == (a.id, "references", "strong")
    assert r.campaign_id == camp.id and r.event_type == "reply.received"
    # In-Reply-To beats References.
    r = service.process_message(reply(in_reply_to="<b@acme.example>", references="<a@acme.example>",
                                      message_id="<r2@c>"), src())
    assert (r.outbound_id, r.match_method) == (b.id, "in_reply_to")
    # Headers lost: the token in the plus address threads it (also in Delivered-To only).
    r = service.process_message(reply(to="sales@acme.example", message_id="<r3@c>",
                                      extra=f"Delivered-To: reply+{b.reply_token.upper()}@in.acme.example"), src())
    assert (r.outbound_id, r.match_method) == (b.id, "token")
    # Nothing but the contact and subject: a weak match.
    r = service.process_message(reply(subject="RE: AW: Quick question", message_id="<r4@c>"), src())
    assert (r.outbound_id, r.match_method, r.match_strength) == (a.id, "subject", "weak")
    # Outside the campaign window the subject match does not count.
    r = service.process_message(reply(subject="Re: Quick question", message_id="<r5@c>",
                                      date="Mon, 05 Jan 2027 10:00:00 +0000"), src())
    assert (r.outbound_id, r.match_method, r.event_type) == (None, "none", "reply.unmatched")


def test_tampered_or_foreign_token_does_not_thread(service: RepliesService, two) -> None:  # noqa: ANN001
    _, a, _ = two
    t = a.reply_token
    tampered = t[:-1] + ("a" if t[-1] != "a" else "b")
    r = service.process_message(reply(to=f"reply+{tampered}@in.acme.example", frm="z@z.example"), src())
    assert r.outbound_id is None and r.match_method == "none"
    # The right token in another tenant's message does not cross the wall.
    rec = service.process_message(reply(to=f"reply+{t}@in.acme.example", frm="z@z.example", message_id="<o@x>"),
                                  Source("other", "test"))
    assert rec.outbound_id is None


def test_follow_ups_join_the_thread(service: RepliesService, two) -> None:  # noqa: ANN001
    _, a, _ = two
    first = service.process_message(reply(in_reply_to="<a@acme.example>", message_id="<f1@c>"), src())
    # A follow-up that only references the contact's own earlier reply.
    second = service.process_message(reply(in_reply_to="<f1@c>", message_id="<f2@c>", body="One more thing.\n"),
                                     src())
    assert second.thread_id == first.thread_id and second.outbound_id == a.id
    threads = service.queries.threads("acme")
    assert len(threads) == 1 and threads[0]["reply_count"] == 2


def test_idempotent_by_source_position_and_message_id(service: RepliesService, engine, two) -> None:  # noqa: ANN001
    raw = reply(in_reply_to="<a@acme.example>", message_id="<same@c>")
    first = service.process_message(raw, src("imap:1:INBOX", uid=10))
    again = service.process_message(raw, src("imap:1:INBOX", uid=10))
    moved = service.process_message(raw, src("imap:1:INBOX", uid=11))  # same Message-ID, new UID
    elsewhere = service.process_message(raw, src("local:reply@acme.example"))
    assert not first.duplicate and first.events
    assert again.duplicate and moved.duplicate and elsewhere.duplicate
    assert again.id == moved.id == elsewhere.id == first.id
    assert again.events == [] and again.kind == first.kind
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(events)).scalar() == 1
    # Without a Message-ID, the content hash stands in.
    raw2 = reply(message_id="").replace(b"Message-ID: \r\n", b"")
    one = service.process_message(raw2, src())
    two_ = service.process_message(raw2, src())
    assert two_.duplicate and two_.id == one.id


def test_events_and_webhook_deliveries_are_written_with_the_reply(service: RepliesService, engine, two) -> None:  # noqa: ANN001
    camp, a, _ = two
    ep = service.outbox.add_endpoint("acme", "http://127.0.0.1:9/hook", ["reply.received"])
    service.outbox.add_endpoint("acme", "http://127.0.0.1:9/bounces", ["bounce.hard"])
    service.outbox.add_endpoint("other", "http://127.0.0.1:9/other")
    r = service.process_message(reply(in_reply_to="<a@acme.example>",
                                      body="Yes please!\n\nOn Fri, Jan 2, 2026 at 9:00 AM Sales <s@acme.example> "
                                           "wrote:\n> Quick question\n"), src())
    with engine.connect() as conn:
        rows = conn.execute(sa.select(webhook_deliveries.c.endpoint_id, webhook_deliveries.c.event_id)).all()
        payload = json.loads(conn.execute(sa.select(events.c.payload)).scalar_one())
    assert [(x.endpoint_id, x.event_id) for x in rows] == [(ep["id"], r.events[0])]
    assert payload["type"] == "reply.received" and payload["tenant"] == "acme"
    data = payload["data"]
    assert data["campaign"] == {"id": camp.id, "name": "Q1"}
    assert data["outbound_message"]["message_id"] == "a@acme.example"
    assert data["reply"]["stripped_text"] == "Yes please!"
    assert "Quick question" in data["reply"]["text"]


def test_hard_bounce_and_unsubscribe_suppress(service: RepliesService, two) -> None:  # noqa: ANN001
    _, a, b = two
    dsn = (
        b"From: Mail Delivery System <MAILER-DAEMON@mx.acme.example>\r\nTo: bounces@acme.example\r\n"
        b"Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <dsn1@mx>\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n"
        b"--B\r\nContent-Type: text/plain\r\n\r\nI'm sorry to have to inform you...\r\n"
        b"--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.acme.example\r\n\r\n"
        b"Final-Recipient: rfc822; anna@client.example\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        b"Diagnostic-Code: smtp; 550 5.1.1 <anna@client.example>: Recipient address rejected\r\n\r\n"
        b"--B\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <a@acme.example>\r\n"
        b"To: anna@client.example\r\nSubject: Quick question\r\n\r\n--B--\r\n")
    r = service.process_message(dsn, src())
    assert (r.kind, r.bounce_type, r.outbound_id, r.match_method) == ("bounce", "hard", a.id, "report")
    assert r.event_type == "bounce.hard"
    assert r.details["recipients"][0]["status"] == "5.1.1"
    assert service.queries.is_suppressed("acme", "Anna@client.example")
    assert not service.queries.is_suppressed("other", "anna@client.example")
    u = service.process_message(reply(frm="bob@client.example", in_reply_to="<b@acme.example>",
                                      body="Unsubscribe\n", message_id="<u@c>"), src())
    assert (u.kind, u.event_type, u.outbound_id) == ("unsubscribe", "unsubscribe", b.id)
    assert service.queries.is_suppressed("acme", "bob@client.example")


def test_attachments_are_listed(service: RepliesService) -> None:
    raw = (
        b"From: a@client.example\r\nTo: s@acme.example\r\nSubject: deck\r\nMessage-ID: <att@c>\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"X\"\r\n\r\n"
        b"--X\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n"
        b"--X\r\nContent-Type: application/pdf; name=\"deck.pdf\"\r\nContent-Disposition: attachment; "
        b"filename=\"deck.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--X--\r\n")
    r = service.process_message(raw, src())
    assert r.attachments == [{"name": "deck.pdf", "content_type": "application/pdf", "size": 9}]
    assert r.stripped_text == "See attached."


def test_auth_verdicts_come_only_from_our_mx(engine, secret, two) -> None:  # noqa: ANN001
    """A sender's own A-R headers (even one naming our host) are not believed; the one our MX wrote is."""
    service = RepliesService(engine, secret, allow_private_webhooks=True, sealer=Sealer(os.urandom(32)),
                             authserv_id="mx.acme.example")
    ours = ("Authentication-Results: mx.acme.example;\r\n\tspf=fail smtp.mailfrom=anna@client.example;\r\n"
            "\tdkim=pass header.d=client.example header.s=s1 header.a=rsa-sha256;\r\n"
            "\tdmarc=pass (p=reject dis=none) header.from=client.example policy.dmarc=reject;\r\n"
            "\tarc=pass (i=1 sealed by lists.example) header.oldest-pass=0 smtp.remote-ip=192.0.2.1")
    forged = ("X-Original-Authentication-Results: mx.acme.example; dmarc=pass header.from=bank.example\r\n"
              "Authentication-Results: other.example; spf=pass smtp.mailfrom=x@bank.example")
    service.outbox.add_endpoint("acme", "http://127.0.0.1:9/hook", ["reply.received"])
    service.process_message(reply(in_reply_to="<a@acme.example>", extra=ours + "\r\n" + forged), src())
    with engine.connect() as conn:
        payload = json.loads(conn.execute(sa.select(events.c.payload)).scalar_one())
    reply_data = payload["data"]["reply"]
    assert reply_data["auth"] == {
        "spf": "fail", "dkim": [{"domain": "client.example", "selector": "s1", "result": "pass"}],
        "dmarc": {"result": "pass", "policy": "reject", "from_domain": "client.example", "override": None},
        "arc": "pass", "spam": None}
    assert len(reply_data["auth_results"]) == 1 and reply_data["auth_results"][0].startswith("mx.acme.example;")
    # without our header (a message that did not come through our MX) there are no verdicts
    other = RepliesService(engine, secret, allow_private_webhooks=True, sealer=Sealer(os.urandom(32)),
                           authserv_id="mx.elsewhere.example")
    r = other.process_message(reply(in_reply_to="<b@acme.example>", message_id="<r2@client.example>",
                                    extra=ours), src("second"))
    with engine.connect() as conn:
        payloads = [json.loads(p) for p in conn.execute(sa.select(events.c.payload).where(events.c.id.in_(r.events)))
                    .scalars()]
    assert payloads[0]["data"]["reply"]["auth"] == {"spf": None, "dkim": [], "dmarc": None, "arc": None,
                                                   "spam": None}
