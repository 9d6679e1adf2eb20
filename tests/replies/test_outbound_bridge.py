"""Outbound's protocols served by the replies engine: registration, relay ids, suppressions."""

from __future__ import annotations

from dovetail.outbound.events import DeliveryEvent
from dovetail.replies.outbound_bridge import OutboundBridge
from dovetail.replies.pipeline import Source
from dovetail.replies.service import RepliesService

from .mails import reply


def test_bridge(service: RepliesService) -> None:
    bridge = OutboundBridge(service)
    bridge.register_outbound(tenant="acme", message_id="<o1@acme.example>", sender="sales@acme.example",
                             recipients=["anna@client.example", "bob@client.example"], campaign="spring",
                             contact=None, tags=[], reply_token="k3m5n7p2q4r6s8t2")
    bridge.outbound_events([
        DeliveryEvent("delivered", "Q1", "anna@client.example", "sales@acme.example", "<o1@acme.example>", "2.0.0",
                      "ok", relay_queue_id="0100abc", provider_message_id="<0100abc@eu-west-1.amazonses.com>",
                      tenant="acme"),
        DeliveryEvent("bounced", "Q1", "bob@client.example", "sales@acme.example", "<o1@acme.example>", "5.1.1",
                      "user unknown", tenant="acme"),
    ])
    # A reply to the SES-rewritten Message-ID threads to Anna's message; a plus-address token to Bob's.
    r = service.process_message(reply(in_reply_to="<0100abc@eu-west-1.amazonses.com>"), Source("acme", "t"))
    assert r.match_method == "in_reply_to" and r.campaign_id is not None
    assert service.registry.outbound("acme")[0].relay_queue_id == "0100abc"
    r2 = service.process_message(reply(frm="bob@client.example", to="reply+k3m5n7p2q4r6s8t2@in.acme.example",
                                       message_id="<bob1@c>"), Source("acme", "t"))
    assert r2.match_method == "token" and r2.outbound_id != r.outbound_id
    assert bridge.suppressed("acme", ["Bob@client.example", "anna@client.example"]) == {"Bob@client.example"}
    assert bridge.suppressed("other", ["bob@client.example"]) == set()
