"""Delivery outcomes as ``message.*`` events: from outbound's delivery events, from bounces at the VERP
return path, and from complaints matched to their message; each written once, with its webhook
deliveries, and only for endpoints subscribed to it."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import sqlalchemy as sa

from dovetail.outbound.events import DeliveryEvent
from dovetail.replies import tokens
from dovetail.replies.outbound_bridge import OutboundBridge
from dovetail.replies.pipeline import Source
from dovetail.replies.registry import RegistryError
from dovetail.replies.schema import events, webhook_deliveries
from dovetail.replies.service import RepliesService

ANNA, BOB = "anna@client.example", "bob@client.example"


def registered(service: RepliesService, recipients: list[str], mid: str = "<o1@acme.example>") -> tuple[str, str]:
    """(reply token, VERP token) of a message registered as the send API does."""
    bridge = OutboundBridge(service)
    token = bridge.new_reply_token("acme")
    bridge.register_outbound(tenant="acme", message_id=mid, sender="news@acme.example", recipients=recipients,
                             campaign="spring", contact="c-1", tags=[], reply_token=token)
    verp = bridge.bounce_token("acme", token)
    assert verp is not None
    return token, verp


def stored(service: RepliesService, etype: str | None = None) -> list[dict[str, Any]]:
    with service.engine.connect() as conn:
        q = sa.select(events.c.payload)
        if etype:
            q = q.where(events.c.type == etype)
        return [json.loads(p) for p in conn.execute(q.order_by(events.c.created_at)).scalars()]


def deliveries(service: RepliesService) -> list[tuple[str, int]]:
    with service.engine.connect() as conn:
        return [(r.type, r.endpoint_id) for r in conn.execute(
            sa.select(events.c.type, webhook_deliveries.c.endpoint_id)
            .join(events, events.c.id == webhook_deliveries.c.event_id))]


def dsn(to: str, recipient: str, status: str = "5.1.1", action: str = "failed") -> bytes:
    return (f"From: MAILER-DAEMON@mx.client.example\r\nTo: {to}\r\nSubject: Undelivered Mail\r\n"
            f"Message-ID: <dsn-{time.monotonic_ns()}@mx.client.example>\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
            "--b\r\nContent-Type: text/plain\r\n\r\nNot delivered.\r\n"
            "--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.client.example\r\n\r\n"
            f"Final-Recipient: rfc822; {recipient}\r\nAction: {action}\r\nStatus: {status}\r\n"
            f"Diagnostic-Code: smtp; 550 {status} user unknown\r\n\r\n--b--\r\n").encode()


def test_bounce_tokens_are_tamper_evident_and_tenant_bound(secret: bytes) -> None:
    reply = tokens.new_token(secret, 1)
    verp = tokens.bounce_token(secret, 1, reply)
    assert verp is not None and verp != reply and tokens.reply_token_of_bounce(secret, 1, verp) == reply
    assert tokens.reply_token_of_bounce(secret, 2, verp) is None  # another tenant's door
    assert tokens.reply_token_of_bounce(secret, 1, reply) is None  # a reply token seen in Reply-To is no bounce token
    assert tokens.reply_token_of_bounce(secret, 1, verp[:-1] + ("a" if verp[-1] != "a" else "b")) is None
    assert tokens.bounce_token(secret, 1, "x" * 32) is None
    assert tokens.bounce_token_of("bounce+abc") == "abc" and tokens.bounce_token_of("reply+abc") is None


def test_delivery_events_become_message_events_for_subscribed_endpoints(service: RepliesService) -> None:
    every = service.outbox.add_endpoint("acme", "http://127.0.0.1:9/all")
    only = service.outbox.add_endpoint("acme", "http://127.0.0.1:9/bounces", ["message.bounced"])
    registered(service, [ANNA, BOB])
    due = time.time() + 300
    OutboundBridge(service).outbound_events([
        DeliveryEvent("deferred", "Q1", ANNA, "bounce+x@acme.example", "<o1@acme.example>", "4.2.0",
                      "host said: 451 4.2.0 busy", "relay[127.0.0.1]:25", tenant="acme", campaign="spring",
                      attempt=3, next_attempt=due),
        DeliveryEvent("bounced", "Q1", BOB, "bounce+x@acme.example", "<o1@acme.example>", "5.1.1",
                      "host said: 550 5.1.1 unknown", "relay[127.0.0.1]:25", tenant="acme", campaign="spring",
                      attempt=3),
    ])
    (deferred,) = stored(service, "message.deferred")
    data = deferred["data"]
    assert data["attempt"] == 3 and data["next_attempt_at"].startswith(time.strftime("%Y-%m-%d", time.gmtime(due)))
    assert data["campaign"]["name"] == "spring" and data["contact"] == "c-1" and data["outbound_message"]["id"]
    assert data["response"] == {"status": "4.2.0", "text": "host said: 451 4.2.0 busy"}
    (bounced,) = stored(service, "message.bounced")
    assert bounced["data"]["bounce"] == {"type": "hard", "status": "5.1.1", "remote_mta": "relay[127.0.0.1]:25",
                                         "diagnostic": "host said: 550 5.1.1 unknown", "source": "smtp"}
    assert OutboundBridge(service).suppressed("acme", [ANNA, BOB]) == {BOB}
    assert sorted(deliveries(service)) == sorted([("message.deferred", every["id"]), ("message.bounced", every["id"]),
                                                  ("message.bounced", only["id"])])


def test_suppressed_on_any_path_is_one_route(service: RepliesService) -> None:
    """Submission reports a suppressed recipient the way the send API does; both become message.suppressed."""
    with service.engine.begin() as conn:
        from dovetail.replies.pipeline import add_suppression
        from dovetail.replies.registry import tenant_id

        add_suppression(conn, tenant_id(conn, "acme"), ANNA, "complaint", "test")
    OutboundBridge(service).outbound_events([
        DeliveryEvent("suppressed", "", ANNA, "news@acme.example", None, "5.7.1",
                      "recipient address suppressed", tenant="acme", campaign="spring")])
    (event,) = stored(service, "message.suppressed")
    assert event["data"]["suppression"]["reason"] == "complaint" and event["data"]["message_id"] is None
    assert event["data"]["response"]["status"] == "5.7.1" and event["tenant"] == "acme"


def test_a_bounce_reported_twice_fires_once(service: RepliesService) -> None:
    _, verp = registered(service, [ANNA])
    OutboundBridge(service).outbound_events([
        DeliveryEvent("bounced", "Q1", ANNA, f"bounce+{verp}@acme.example", "<o1@acme.example>", "5.1.1",
                      "550 5.1.1 unknown", tenant="acme", attempt=1)])
    record = service.process_message(dsn(f"bounce+{verp}@acme.example", ANNA), Source("acme", "t", item="1"))
    assert record.match_method == "verp" and record.events == []
    assert len(stored(service, "message.bounced")) == 1


def test_soft_bounces_and_free_text_bounces_at_the_verp_address(service: RepliesService) -> None:
    _, verp = registered(service, [ANNA])
    soft = service.process_message(dsn(f"bounce+{verp}@acme.example", ANNA, "4.2.2", "delayed"),
                                   Source("acme", "t", item="1"))
    (event,) = stored(service, "message.bounced")
    assert soft.events == [event["id"]] and event["data"]["bounce"]["type"] == "soft"
    assert event["data"]["campaign"]["name"] == "spring" and OutboundBridge(service).suppressed("acme", [ANNA]) == set()
    assert stored(service, "bounce.soft") == []  # the return path speaks in message.* events only
    # The failure that follows a delay report is reported too, once.
    for item in ("2", "3"):
        service.process_message(dsn(f"bounce+{verp}@acme.example", ANNA), Source("acme", "t", item=item))
    assert sorted(e["data"]["bounce"]["type"] for e in stored(service, "message.bounced")) == ["hard", "soft"]
    # A second message, bounced in free text that names no address: the token alone says whose it was.
    _, verp2 = registered(service, [BOB], mid="<o2@acme.example>")
    text = (f"From: postmaster@mx.client.example\r\nTo: bounce+{verp2}@acme.example\r\nSubject: failure notice\r\n"
            "Message-ID: <ft1@mx.client.example>\r\n\r\nSorry, we were unable to deliver your message.\r\n"
            "550 5.1.1 The email account that you tried to reach does not exist.\r\n").encode()
    record = service.process_message(text, Source("acme", "t", item="4"))
    (hard,) = [e for e in stored(service, "message.bounced") if e["data"]["recipient"] == BOB]
    assert record.events == [hard["id"]] and hard["data"]["bounce"]["type"] == "hard"
    assert hard["data"]["bounce"]["source"] == "text" and hard["data"]["message_id"] == "<o2@acme.example>"
    assert OutboundBridge(service).suppressed("acme", [BOB]) == {BOB}


def test_a_forged_or_foreign_bounce_token_changes_nothing(service: RepliesService) -> None:
    _, verp = registered(service, [ANNA])
    forged = verp[:-2] + ("aa" if not verp.endswith("aa") else "bb")
    record = service.process_message(dsn(f"bounce+{forged}@acme.example", ANNA), Source("acme", "t", item="1"))
    assert record.events == [] and record.match_method == "none"
    other = service.process_message(dsn(f"bounce+{verp}@other.example", ANNA), Source("other", "t", item="1"))
    assert other.events == []
    assert stored(service) == [] and OutboundBridge(service).suppressed("acme", [ANNA]) == set()


def test_a_complaint_matched_to_its_message_fires_message_complained(service: RepliesService) -> None:
    registered(service, [ANNA])
    arf = (f"From: fbl@isp.example\r\nTo: abuse@acme.example\r\nSubject: Complaint\r\n"
           "Message-ID: <arf1@isp.example>\r\nMIME-Version: 1.0\r\n"
           'Content-Type: multipart/report; report-type=feedback-report; boundary="b"\r\n\r\n'
           "--b\r\nContent-Type: text/plain\r\n\r\nA complaint.\r\n"
           "--b\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\nUser-Agent: isp/1\r\n"
           "Version: 1\r\n\r\n"
           f"--b\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: news@acme.example\r\nTo: {ANNA}\r\n"
           "Message-ID: <o1@acme.example>\r\nSubject: Offer\r\n\r\n--b--\r\n").encode()
    record = service.process_message(arf, Source("acme", "t", item="1"))
    (complained,) = stored(service, "message.complained")
    assert complained["id"] in record.events and len(stored(service, "complaint")) == 1
    data = complained["data"]
    assert data["recipient"] == ANNA and data["message_id"] == "<o1@acme.example>"
    assert data["campaign"]["name"] == "spring" and data["complaint"]["feedback_type"] == "abuse"
    assert OutboundBridge(service).suppressed("acme", [ANNA]) == {ANNA}


def test_unknown_event_types_are_refused_and_nothing_is_saved(service: RepliesService) -> None:
    with pytest.raises(RegistryError, match="message.exploded"):
        service.outbox.add_endpoint("acme", "http://127.0.0.1:9/x", ["message.delivered", "message.exploded"])
    assert service.outbox.endpoints("acme") == []
    ep = service.outbox.add_endpoint("acme", "http://127.0.0.1:9/x", ["message.delivered", "message.complained"])
    assert ep["event_types"] == ["message.delivered", "message.complained"]
