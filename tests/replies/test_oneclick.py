"""One-click unsubscribe tokens and the service behind ``/unsubscribe/<token>``, on a real database:
what a link unsubscribes, what it refuses, and that each unsubscribe is reported once whichever way
(one-click or a mail to ``unsubscribe+<token>@``) it came."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from dovetail.replies import tokens
from dovetail.replies.oneclick import OneClick, UnsubscribeRefused
from dovetail.replies.outbound_bridge import OutboundBridge
from dovetail.replies.pipeline import Source
from dovetail.replies.registry import Outbound
from dovetail.replies.schema import events, suppressions, webhook_deliveries
from dovetail.replies.service import RepliesService

from .mails import reply


@pytest.fixture
def sent(service: RepliesService) -> tuple[Outbound, Outbound]:
    """One campaign message to two people (one reply token), as the send API registers it."""
    bridge = OutboundBridge(service)
    token = bridge.new_reply_token("acme")
    bridge.register_outbound(tenant="acme", message_id="<m1@acme.example>", sender="news@acme.example",
                             recipients=["anna@client.example", "bob@client.example"], campaign="spring",
                             contact=None, tags=[], reply_token=token, subject="Spring offer")
    anna, bob = service.registry.outbound("acme")
    return anna, bob


@pytest.fixture
def oneclick(service: RepliesService) -> OneClick:
    return OneClick(service.engine, service.registry.secret, lifetime_days=365)


def link(service: RepliesService, ob: Outbound, **kw: int) -> str:
    return tokens.new_unsubscribe_token(service.registry.secret, ob.tenant_id, ob.reply_token, ob.recipient, **kw)


def unsubscribe_events(service: RepliesService) -> list[dict]:
    with service.engine.connect() as conn:
        rows = conn.execute(sa.select(events.c.payload).where(events.c.type == "unsubscribe")).scalars().all()
    return [json.loads(p) for p in rows]


def test_a_link_names_its_recipient_and_resolving_changes_nothing(service: RepliesService, sent, oneclick) -> None:  # noqa: ANN001
    anna, bob = sent
    target = oneclick.resolve(link(service, bob))
    assert (target.tenant, target.address, target.campaign, target.outbound.id) == ("acme", bob.recipient,
                                                                                     "spring", bob.id)
    assert oneclick.resolve(link(service, anna).upper()).address == anna.recipient  # case does not matter
    assert not service.queries.is_suppressed("acme", bob.recipient) and unsubscribe_events(service) == []


@pytest.mark.parametrize("how", ["altered", "truncated", "garbage", "other secret", "other tenant", "recipient"])
def test_a_forged_or_malformed_link_is_refused_and_suppresses_nobody(service: RepliesService, sent, oneclick,  # noqa: ANN001
                                                                     how: str) -> None:
    anna, bob = sent
    good = link(service, bob)
    token = {
        "altered": good[:40] + ("a" if good[40] != "a" else "b") + good[41:],
        "truncated": good[:-2],
        "garbage": "not-a-token/../../etc",
        "other secret": tokens.new_unsubscribe_token(b"x" * 32, bob.tenant_id, bob.reply_token, bob.recipient),
        "other tenant": tokens.new_unsubscribe_token(service.registry.secret, bob.tenant_id + 1, bob.reply_token,
                                                     bob.recipient),
        # Genuine MAC for an address the message never went to.
        "recipient": tokens.new_unsubscribe_token(service.registry.secret, bob.tenant_id, bob.reply_token,
                                                  "victim@client.example"),
    }[how]
    for call in (oneclick.resolve, oneclick.unsubscribe):
        with pytest.raises(UnsubscribeRefused) as refused:
            call(token)
        assert refused.value.status == 404 and "not valid" in refused.value.detail
    with service.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(suppressions)).scalar() == 0
    assert unsubscribe_events(service) == []


def test_an_expired_link_is_gone_and_suppresses_nobody(service: RepliesService, sent, oneclick) -> None:  # noqa: ANN001
    _, bob = sent
    assert oneclick.resolve(link(service, bob, issued_day=tokens.today() - 365)).address == bob.recipient
    old = link(service, bob, issued_day=tokens.today() - 366)
    with pytest.raises(UnsubscribeRefused) as refused:
        oneclick.unsubscribe(old)
    assert refused.value.status == 410 and "expired" in refused.value.detail
    future = link(service, bob, issued_day=tokens.today() + 30)  # a clock far ahead is no licence either
    with pytest.raises(UnsubscribeRefused):
        oneclick.resolve(future)
    assert not service.queries.is_suppressed("acme", bob.recipient)


def test_unsubscribing_twice_suppresses_once_and_reports_once(service: RepliesService, sent, oneclick) -> None:  # noqa: ANN001
    anna, bob = sent
    endpoint = service.outbox.add_endpoint("acme", "http://127.0.0.1:9/hook", ["unsubscribe"])
    first = oneclick.unsubscribe(link(service, bob))
    again = oneclick.unsubscribe(link(service, bob))
    assert first.new and first.event_id and not again.new and again.event_id is None
    assert service.queries.is_suppressed("acme", bob.recipient)
    assert not service.queries.is_suppressed("acme", anna.recipient)  # the other recipient of the same message
    [row] = service.queries.suppressions("acme")
    assert row["reason"] == "unsubscribe"
    [event] = unsubscribe_events(service)
    assert event["id"] == first.event_id and event["tenant"] == "acme"
    assert event["data"]["unsubscribe"] == {"address": bob.recipient, "method": "one-click"}
    assert event["data"]["campaign"]["name"] == "spring"
    assert event["data"]["outbound_message"]["message_id"] == "m1@acme.example"
    with service.engine.connect() as conn:
        deliveries = conn.execute(sa.select(webhook_deliveries.c.endpoint_id, webhook_deliveries.c.event_id)).all()
    assert [tuple(d) for d in deliveries] == [(endpoint["id"], first.event_id)]  # the durable outbox has it

    # Taken off the list by the operator, then unsubscribed again: a new unsubscribe, reported.
    assert service.queries.unsuppress("acme", bob.recipient)
    assert oneclick.unsubscribe(link(service, bob)).new
    assert len(unsubscribe_events(service)) == 2


def test_the_mailto_form_and_the_link_report_one_unsubscribe_between_them(service: RepliesService, sent,  # noqa: ANN001
                                                                          oneclick) -> None:
    anna, bob = sent
    # Anna's mail client uses the mailto: form first: suppressed and reported, with the address it went to.
    mail = reply(frm=anna.recipient, to=f"unsubscribe+{anna.reply_token}@acme.example", subject="unsubscribe",
                 body="\n", message_id="<u1@client.example>")
    r = service.process_message(mail, Source("acme", "local:_replies", item="u1"))
    assert (r.kind, r.event_type, r.match_method, r.outbound_id) == ("unsubscribe", "unsubscribe", "token", anna.id)
    assert service.queries.is_suppressed("acme", anna.recipient)
    # Then she clicks the link too: the same 200-worthy outcome, nothing new to report.
    assert not oneclick.unsubscribe(link(service, anna)).new
    # Bob clicks first, then his client also sends the mail: the mail is stored, no second event.
    assert oneclick.unsubscribe(link(service, bob)).new
    mail = reply(frm=bob.recipient, to=f"unsubscribe+{bob.reply_token}@acme.example", subject="unsubscribe",
                 body="\n", message_id="<u2@client.example>")
    r = service.process_message(mail, Source("acme", "local:_replies", item="u2"))
    assert r.kind == "unsubscribe" and r.events == [] and r.event_type == ""
    by_method = sorted((e["data"]["unsubscribe"]["method"], e["data"]["unsubscribe"]["address"])
                       for e in unsubscribe_events(service))
    assert by_method == [("mailto", anna.recipient), ("one-click", bob.recipient)]
