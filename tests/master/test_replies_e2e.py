"""The replies engine through the master: an SMTP reply to a registered campaign message becomes a
signed webhook at a real HTTP receiver, with the campaign and the kind."""

from __future__ import annotations

import json
from pathlib import Path

from ..replies.receiver import Receiver
from .harness import Master, cli


def ok(m: Master, *args: str) -> str:
    out = cli(m.data_dir, *args)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_reply_to_a_campaign_message_fires_a_signed_webhook(tmp_path: Path) -> None:
    m = Master.create(tmp_path)
    ok(m, "config", "set", "replies.webhook_allow_private=true")  # the receiver is on loopback
    ok(m, "campaigns", "add", "--tenant", "acme", "spring")
    ok(m, "campaigns", "register", "--tenant", "acme", "spring", "--message-id", "<out-1@acme.example>",
       "--recipient", "carl@ext.example", "--subject", "Spring offer")
    ok(m, "replies", "inbox", "add", "--tenant", "acme", "bob@acme.example")
    receiver = Receiver().start()
    endpoint = json.loads(ok(m, "webhooks", "add", "--tenant", "acme", receiver.url, "--json"))
    receiver.secret = endpoint["secret"]
    m.start()
    try:
        with m.smtp() as s:
            s.sendmail("carl@ext.example", ["bob@acme.example"],
                       "From: Carl <carl@ext.example>\r\nTo: bob@acme.example\r\nSubject: Re: Spring offer\r\n"
                       "Message-ID: <reply-1@ext.example>\r\nIn-Reply-To: <out-1@acme.example>\r\n\r\n"
                       "Yes, send me the details.\r\n\r\nOn Mon, Bob wrote:\r\n> Spring offer inside\r\n")
        (event,) = receiver.wait_for(1, timeout=30)
        assert not receiver.rejected  # every request carried a valid Standard Webhooks signature
        assert event["type"] == "reply.received"
        data = event["data"]
        assert data["campaign"]["name"] == "spring"
        assert data["outbound_message"]["message_id"].strip("<>") == "out-1@acme.example"
        reply = data["reply"]
        assert reply["kind"] == "human" and reply["from"] == "carl@ext.example"
        assert reply["stripped_text"].strip() == "Yes, send me the details."
        replies = json.loads(ok(m, "replies", "list", "--tenant", "acme", "--json"))
        assert len(replies) == 1 and replies[0]["kind"] == "human"
    finally:
        receiver.stop()
        m.stop()
        m.cleanup()


def test_a_reply_is_published_to_nats_jetstream_through_the_running_master(tmp_path: Path) -> None:
    """``events.nats_url`` set and a ``nats:`` endpoint: the replies service publishes the event to the
    stream under the tenant's subject, signed as a webhook would be."""
    import asyncio

    import nats

    from dovetail.replies import signing
    from tests.natsserver import NatsServer

    server = NatsServer(tmp_path / "jetstream").start()
    (tmp_path / "m").mkdir()
    m = Master.create(tmp_path / "m")
    try:
        ok(m, "config", "set", f"events.nats_url={server.url}", "events.nats_stream=REPLIES")
        ok(m, "campaigns", "add", "--tenant", "acme", "spring")
        ok(m, "campaigns", "register", "--tenant", "acme", "spring", "--message-id", "<out-2@acme.example>",
           "--recipient", "carl@ext.example", "--subject", "Spring offer")
        ok(m, "replies", "inbox", "add", "--tenant", "acme", "bob@acme.example")
        secret = json.loads(ok(m, "webhooks", "add", "--tenant", "acme", "nats:", "--json"))["secret"]

        async def next_event() -> tuple[str, dict[str, str], bytes]:
            nc = await nats.connect(server.url)
            try:
                js = nc.jetstream()
                for _ in range(600):  # the stream appears with the first publication
                    try:
                        sub = await js.subscribe("dovetail.acme.>", stream="REPLIES")
                        break
                    except Exception:  # noqa: BLE001 - not created yet
                        await asyncio.sleep(0.1)
                msg = await sub.next_msg(timeout=60)
                return msg.subject, dict(msg.headers or {}), msg.data
            finally:
                await nc.close()

        m.start()
        with m.smtp() as s:
            s.sendmail("carl@ext.example", ["bob@acme.example"],
                       "From: carl@ext.example\r\nTo: bob@acme.example\r\nSubject: Re: Spring offer\r\n"
                       "Message-ID: <reply-2@ext.example>\r\nIn-Reply-To: <out-2@acme.example>\r\n\r\nYes.\r\n")
        subject, headers, body = asyncio.run(next_event())
        assert subject == "dovetail.acme.reply.received"
        event = signing.verify(secret, headers, body)
        assert headers["Nats-Msg-Id"] == event["id"]
        assert event["data"]["campaign"]["name"] == "spring"
        [delivery] = json.loads(ok(m, "webhooks", "deliveries", "--tenant", "acme", "--json"))
        assert delivery["status"] == "delivered"
    finally:
        m.stop()
        m.cleanup()
        server.stop()
