"""Relay and direct-MX delivery to local SMTP servers, DKIM-signed on the way out."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import dkim
import pytest

from dovetail.outbound.delivery import AgentConfig, OutboundAgent
from dovetail.outbound.events import MemoryEvents, relay_ids
from dovetail.outbound.keys import DkimKeys
from dovetail.outbound.mx import MxResolver, parse_policy
from dovetail.outbound.transports import Transports
from dovetail.queue import Envelope, Queue, QueuedMessage, QueueRecipient
from dovetail.sealing import Sealer

from .sink import Certs, Sink, SinkHandler

MESSAGE = (b"From: Alice <alice@acme.example>\r\nTo: bob@example.org\r\nSubject: hi\r\n"
           b"Message-ID: <m1@acme.example>\r\nDate: Sat, 28 Nov 2026 10:00:00 +0000\r\n\r\nHello Bob.\r\n")


def queued(tmp_path: Path, recipients: list[str], sender: str = "alice@acme.example",
           data: bytes = MESSAGE, **extra: str) -> QueuedMessage:
    queue = Queue(tmp_path / "queue")
    env = Envelope(sender=sender, recipients=[QueueRecipient(r) for r in recipients], extra=dict(extra))
    qid = queue.inject(env, data)
    return QueuedMessage(qid, queue.path("incoming", qid))


def deliver(agent: OutboundAgent, msg: QueuedMessage):  # noqa: ANN201
    async def run():  # noqa: ANN202
        try:
            return await agent.deliver(msg, msg.envelope.pending())
        finally:
            await agent.close()

    return asyncio.run(run())


@pytest.fixture
def certs() -> Certs:
    return Certs("127.0.0.1", "localhost", "mx1.example.org")


def relay_agent(world, certs, port: int, tls: str = "starttls", events=None, **cfg):  # noqa: ANN001, ANN201
    # The secret is sealed at rest, as `dovetail transport set` stores it, and opened for AUTH.
    transports = Transports(world.engine, sealer=Sealer.for_data_dir(world.root))
    transports.set("tenant", "acme", "relay", host="127.0.0.1", port=port, tls=tls, username="relayuser",
                   secret="relaypw")
    keys = DkimKeys(world.engine, world.dkim_dir)
    config = AgentConfig(hostname="out.dovetail.test", relay_tls_context=certs.client_context(),
                         connect_timeout=5, command_timeout=5, **cfg)
    return OutboundAgent(transports, keys, config, events=events), keys


def test_relay_with_starttls_and_auth_signs_and_reports_per_recipient(world, certs, tmp_path, dns_server) -> None:
    events = MemoryEvents()
    with Sink(certs, require_tls=True, users={"relayuser": "relaypw"}) as sink:
        agent, keys = relay_agent(world, certs, sink.port, events=events)
        for k in keys.ensure("acme.example"):
            dns_server.txt(k.record_name, k.txt)
        msg = queued(tmp_path, ["bob@example.org", "bounce@example.org", "defer@example.org"], campaign="c1")
        results = deliver(agent, msg)
    by = {r.recipient.address: r for r in results}
    assert by["bob@example.org"].status == "sent"
    assert by["bob@example.org"].dsn_code == "2.0.0"
    assert by["bob@example.org"].reason == "250 2.0.0 Ok: queued as 4ABC123XYZ"
    assert by["bob@example.org"].relay == f"127.0.0.1[127.0.0.1]:{sink.port}"
    assert by["bounce@example.org"].status == "bounced" and by["bounce@example.org"].dsn_code == "5.1.1"
    assert "said: 550 5.1.1" in by["bounce@example.org"].reason
    assert "(in reply to RCPT TO command)" in by["bounce@example.org"].reason
    assert by["defer@example.org"].status == "deferred" and by["defer@example.org"].dsn_code == "4.3.0"
    [got] = sink.handler.messages
    assert got.tls and got.auth == "relayuser"
    assert got.recipients == ["bob@example.org"]
    assert got.sender == "alice@acme.example"
    assert got.data.count(b"DKIM-Signature:") == 2
    for i in range(2):
        assert dkim.DKIM(got.data).verify(idx=i, dnsfunc=dns_server.dkimpy_dnsfunc())
    kinds = {e.recipient: (e.kind, e.relay_queue_id, e.campaign, e.message_id) for e in events.events}
    assert kinds["bob@example.org"] == ("delivered", "4ABC123XYZ", "c1", "<m1@acme.example>")
    assert kinds["bounce@example.org"][0] == "bounced"
    assert kinds["defer@example.org"][0] == "deferred"


def test_relay_with_implicit_tls(world, certs, tmp_path) -> None:
    with Sink(certs, implicit_tls=True, users={"relayuser": "relaypw"}) as sink:
        agent, _ = relay_agent(world, certs, sink.port, tls="implicit")
        [res] = deliver(agent, queued(tmp_path, ["bob@example.org"]))
    assert res.status == "sent"
    assert sink.handler.messages[0].tls


def test_relay_without_starttls_is_deferred_not_sent_in_clear(world, certs, tmp_path) -> None:
    with Sink(None) as sink:
        agent, _ = relay_agent(world, certs, sink.port)
        [res] = deliver(agent, queued(tmp_path, ["bob@example.org"]))
    assert res.status == "deferred" and "TLS is required" in res.reason
    assert sink.handler.messages == []


def test_relay_with_untrusted_certificate_is_deferred(world, tmp_path) -> None:
    with Sink(Certs(), require_tls=True, users={"relayuser": "relaypw"}) as sink:
        agent, _ = relay_agent(world, Certs(), sink.port)  # trusts another CA
        [res] = deliver(agent, queued(tmp_path, ["bob@example.org"]))
    assert res.status == "deferred"
    assert sink.handler.messages == []


def test_relay_auth_failure_is_deferred(world, certs, tmp_path) -> None:
    with Sink(certs, require_tls=True, users={"relayuser": "other"}) as sink:
        agent, _ = relay_agent(world, certs, sink.port)
        [res] = deliver(agent, queued(tmp_path, ["bob@example.org"]))
    assert res.status == "deferred" and "SASL authentication failed" in res.reason
    assert sink.handler.messages == []


def test_relay_connection_refused_is_deferred(world, certs, tmp_path) -> None:
    from .dnsserver import free_port

    agent, _ = relay_agent(world, certs, free_port())
    [res] = deliver(agent, queued(tmp_path, ["bob@example.org"]))
    assert res.status == "deferred" and res.dsn_code == "4.4.1" and "Connection refused" in res.reason


def test_data_rejection_bounces_all_accepted(world, certs, tmp_path) -> None:
    handler = SinkHandler(data_reply="554 5.7.1 Message rejected: spam")
    with Sink(certs, require_tls=True, users={"relayuser": "relaypw"}, handler=handler) as sink:
        agent, _ = relay_agent(world, certs, sink.port)
        results = deliver(agent, queued(tmp_path, ["a@example.org", "b@example.org"]))
    assert [r.status for r in results] == ["bounced", "bounced"]
    assert all(r.dsn_code == "5.7.1" and "end of DATA" in r.reason for r in results)


def test_ses_reply_gives_provider_message_id() -> None:
    rq, mid = relay_ids("2.0.0 Ok 0100018c1b2c3d4e-5f6a7b8c-1234-5678-9abc-def012345678-000000", "eu-west-1")
    assert rq == "0100018c1b2c3d4e-5f6a7b8c-1234-5678-9abc-def012345678-000000"
    assert mid == f"<{rq}@eu-west-1.amazonses.com>"
    assert relay_ids("2.0.0 Ok: queued as 4Xyz12", None) == ("4Xyz12", None)
    assert relay_ids("Ok", None) == (None, None)


def test_relay_reuses_connections_across_messages(world, certs, tmp_path) -> None:
    with Sink(certs, require_tls=True, users={"relayuser": "relaypw"}) as sink:
        agent, _ = relay_agent(world, certs, sink.port, connection_cache_time=5)
        msgs = [queued(tmp_path, [f"r{i}@example.org"]) for i in range(5)]

        async def run():  # noqa: ANN202
            out = []
            for m in msgs:
                out += await agent.deliver(m, m.envelope.pending())
            await agent.close()
            return out

        results = asyncio.run(run())
    assert all(r.status == "sent" for r in results)
    assert len(sink.handler.messages) == 5
    assert sink.handler.sessions == 1
    assert agent.connections_reused == 4


# --- direct MX ------------------------------------------------------------------------------------


def mx_agent(world, dns_server, port: int, fetch_policy=None, sts_context=None):  # noqa: ANN001, ANN201
    config = AgentConfig(hostname="out.dovetail.test", mx_port=port, connect_timeout=5, command_timeout=5,
                         sts_tls_context=sts_context)
    mx = MxResolver(dns_server.async_resolver(), fetch_policy=fetch_policy)
    return OutboundAgent(Transports(world.engine), DkimKeys(world.engine, world.dkim_dir), config, mx=mx)


def test_direct_mx_with_opportunistic_starttls(world, certs, dns_server, tmp_path) -> None:
    from .dnsserver import free_port

    dead = free_port()
    dns_server.mx("example.org", "mx1.example.org", 10)
    dns_server.a("mx1.example.org", "127.0.0.1")
    dns_server.mx("example.net", "mx.example.net", 10)  # no address at all
    dns_server.a("implicit.example", "127.0.0.1")  # no MX: the A record is the implicit MX
    with Sink(certs) as sink:
        agent = mx_agent(world, dns_server, sink.port)
        results = deliver(agent, queued(tmp_path, ["bob@example.org", "carol@implicit.example",
                                                   "dan@example.net", "erin@nxdomain.example"]))
    by = {r.recipient.address: r for r in results}
    assert by["bob@example.org"].status == "sent"
    assert by["bob@example.org"].relay == f"mx1.example.org[127.0.0.1]:{sink.port}"
    assert by["carol@implicit.example"].status == "sent"
    assert by["dan@example.net"].status == "deferred"
    assert by["erin@nxdomain.example"].status == "bounced" and by["erin@nxdomain.example"].dsn_code == "5.1.2"
    assert all(m.tls for m in sink.handler.messages)
    assert dead  # noqa: S101


class LegacyTlsCerts(Certs):
    """An MX whose TLS stack speaks only TLS 1.1: the handshake with a modern client fails."""

    def server_context(self) -> ssl.SSLContext:
        ctx = super().server_context()
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        return ctx


def test_failed_opportunistic_handshake_is_retried_in_plaintext(world, dns_server, tmp_path, caplog) -> None:
    dns_server.mx("example.org", "mx1.example.org", 10)
    dns_server.a("mx1.example.org", "127.0.0.1")
    with Sink(LegacyTlsCerts()) as sink:
        agent = mx_agent(world, dns_server, sink.port)
        [res] = deliver(agent, queued(tmp_path, ["bob@example.org"]))
    assert res.status == "sent" and res.relay == f"mx1.example.org[127.0.0.1]:{sink.port}"
    [got] = sink.handler.messages
    assert not got.tls and got.recipients == ["bob@example.org"]
    assert sink.handler.sessions == 2  # the failed TLS attempt, then the plaintext one


def test_failed_handshake_under_mta_sts_enforce_is_never_retried_in_plaintext(world, dns_server, tmp_path) -> None:
    dns_server.mx("example.org", "mx1.example.org", 10)
    dns_server.a("mx1.example.org", "127.0.0.1")
    dns_server.txt("_mta-sts.example.org", "v=STSv1; id=1")
    certs = LegacyTlsCerts("mx1.example.org")

    async def policy(domain: str):  # noqa: ANN202
        return "version: STSv1\nmode: enforce\nmx: mx1.example.org\nmax_age: 86400\n"

    with Sink(certs) as sink:
        agent = mx_agent(world, dns_server, sink.port, fetch_policy=policy, sts_context=certs.client_context())
        [res] = deliver(agent, queued(tmp_path, ["bob@example.org"]))
    assert res.status == "deferred" and "TLS handshake" in res.reason
    assert sink.handler.messages == []


def test_direct_mx_falls_back_to_next_mx(world, dns_server, tmp_path) -> None:
    dns_server.mx("example.org", "mx1.example.org", 10)
    dns_server.mx("example.org", "mx2.example.org", 20)
    dns_server.a("mx1.example.org", "127.0.0.2")  # nothing listens there on the test port
    dns_server.a("mx2.example.org", "127.0.0.1")
    with Sink(None) as sink:
        agent = mx_agent(world, dns_server, sink.port)
        [res] = deliver(agent, queued(tmp_path, ["bob@example.org"]))
    assert res.status == "sent" and res.relay.startswith("mx2.example.org[127.0.0.1]")


def test_null_mx_bounces(world, dns_server, tmp_path) -> None:
    dns_server.mx("nomail.example", ".", 0)
    agent = mx_agent(world, dns_server, 9)
    [res] = deliver(agent, queued(tmp_path, ["x@nomail.example"]))
    assert res.status == "bounced" and res.dsn_code == "5.1.10"


def test_mta_sts_enforce_requires_listed_mx_and_verified_tls(world, certs, dns_server, tmp_path) -> None:
    dns_server.mx("example.org", "mx1.example.org", 10)
    dns_server.a("mx1.example.org", "127.0.0.1")
    dns_server.txt("_mta-sts.example.org", "v=STSv1; id=20261128")
    policy = {"text": "version: STSv1\nmode: enforce\nmx: *.example.org\nmax_age: 86400\n"}

    async def fetch(domain: str) -> str:
        assert domain == "example.org"
        return policy["text"]

    with Sink(certs) as sink:
        agent = mx_agent(world, dns_server, sink.port, fetch, certs.client_context())
        [ok] = deliver(agent, queued(tmp_path, ["bob@example.org"]))
        assert ok.status == "sent"
        # a certificate from a CA we do not trust: enforce mode refuses to deliver
        agent = mx_agent(world, dns_server, sink.port, fetch, Certs().client_context())
        [bad] = deliver(agent, queued(tmp_path, ["bob@example.org"]))
        assert bad.status == "deferred" and bad.dsn_code == "4.7.5"
        # an MX the policy does not list
        policy["text"] = "version: STSv1\nmode: enforce\nmx: mail.other.example\nmax_age: 86400\n"
        agent = mx_agent(world, dns_server, sink.port, fetch, certs.client_context())
        [unlisted] = deliver(agent, queued(tmp_path, ["bob@example.org"]))
        assert unlisted.status == "deferred" and "lists none" in unlisted.reason
    assert len(sink.handler.messages) == 1


def test_mta_sts_policy_parsing() -> None:
    p = parse_policy("version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\n"
                     "max_age: 604800\r\n")
    assert p.allows("mail.example.com") and p.allows("mx1.example.net")
    assert not p.allows("a.b.example.net") and not p.allows("example.net") and not p.allows("evil.com")
    for bad in ("mode: enforce\nmx: a.b\nmax_age: 1", "version: STSv1\nmode: maybe\nmx: a.b\nmax_age: 1",
                "version: STSv1\nmode: enforce\nmax_age: 1", "version: STSv1\nmode: enforce\nmx: a.b\nmax_age: x"):
        with pytest.raises(ValueError):
            parse_policy(bad)


def test_relay_secret_is_sealed_in_the_database_and_refused_when_it_cannot_be_opened(world, certs, tmp_path) -> None:
    import sqlalchemy as sa

    from dovetail.outbound.schema import transports as table

    with Sink(certs, require_tls=True, users={"relayuser": "relaypw"}) as sink:
        agent, _ = relay_agent(world, certs, sink.port)
        with world.engine.connect() as conn:
            stored = conn.execute(sa.select(table.c.secret)).scalar_one()
        assert stored.startswith("sealed:v1:") and "relaypw" not in stored
        assert agent.transports.for_sender("alice@acme.example").secret == "relaypw"
        # Another installation's key (a database moved without its data directory) opens nothing.
        other = OutboundAgent(Transports(world.engine, sealer=Sealer.for_data_dir(tmp_path / "elsewhere")),
                              None, agent.config)
        assert other.transports.for_sender("alice@acme.example").secret == stored
        [res] = deliver(other, queued(tmp_path, ["bob@example.org"]))
    assert res.status == "deferred" and "sealed with another key" in res.reason
    assert sink.handler.messages == []


def test_a_domain_whose_key_cannot_be_loaded_is_deferred_never_sent_unsigned(world, certs, tmp_path) -> None:
    events = MemoryEvents()
    with Sink(certs, require_tls=True, users={"relayuser": "relaypw"}) as sink:
        agent, keys = relay_agent(world, certs, sink.port, events=events)
        rsa_key, _ = keys.ensure("acme.example")
        path = keys.key_path("acme.example", rsa_key.selector)
        path.unlink()
        msg = queued(tmp_path, ["bob@example.org", "carol@example.org"])
        results = deliver(agent, msg)
        assert [(r.status, r.dsn_code, r.relay) for r in results] == [("deferred", "4.7.0", None)] * 2
        assert results[0].reason == f"DKIM key for acme.example unreadable: {path}: No such file or directory"
        assert agent.connections_made == 0 and sink.handler.messages == []
        assert [(e.kind, e.message_id) for e in events.events] == [("deferred", "<m1@acme.example>")] * 2
        keys.retire("acme.example")  # nothing retiring: the broken pair stays active
        keys.rotate("acme.example")
        keys.activate("acme.example")
        keys.retire("acme.example")
        [res, _] = deliver(agent, msg)  # a sound pair again: the next try is signed and sent
    assert res.status == "sent"
    assert sink.handler.messages[0].data.count(b"DKIM-Signature:") == 2


@pytest.mark.parametrize("data", [
    b"From: Alice <alice@acme.example>\r\nthis line is no header field\r\nSubject: hi\r\n\r\nHello.\r\n",
    b"To: bob@example.org\r\nSubject: no From at all\r\n\r\nHello.\r\n",
    b"From: undisclosed-sender:;\r\nTo: bob@example.org\r\n\r\nHello.\r\n",
], ids=["unsplittable header", "no From", "From without an address"])
def test_a_message_of_a_signing_sender_that_cannot_be_signed_bounces_never_unsigned(world, certs, tmp_path,
                                                                                    data: bytes) -> None:
    """No readable From: names no signing domain; the envelope sender's domain signs, so the message goes
    back to its sender (5.6.0, the content is at fault), and nothing reaches the relay."""
    events = MemoryEvents()
    with Sink(certs, require_tls=True, users={"relayuser": "relaypw"}) as sink:
        agent, keys = relay_agent(world, certs, sink.port, events=events)
        keys.ensure("acme.example")
        results = deliver(agent, queued(tmp_path, ["bob@example.org", "carol@example.org"], data=data))
        assert [(r.status, r.dsn_code, r.relay) for r in results] == [("bounced", "5.6.0", None)] * 2
        assert results[0].reason == ("message has no readable From: header, so it cannot be DKIM-signed for "
                                     "acme.example")
        assert agent.connections_made == 0 and sink.handler.messages == []
        assert [(e.kind, e.dsn) for e in events.events] == [("bounced", "5.6.0")] * 2


def test_a_message_without_from_whose_sender_does_not_sign_goes_as_it_came(world, certs, tmp_path) -> None:
    """A forwarded message of a domain that is not ours (or a null sender) is not ours to refuse."""
    with Sink(certs, require_tls=True, users={"relayuser": "relaypw"}) as sink:
        agent, keys = relay_agent(world, certs, sink.port)
        keys.ensure("acme.example")
        data = b"To: bob@example.org\r\nSubject: forwarded\r\n\r\nHello.\r\n"
        for sender in ("someone@elsewhere.example", ""):
            [res] = deliver(agent, queued(tmp_path, ["bob@example.org"], sender=sender, data=data,
                                          tenant="acme"))
            assert res.status == "sent"
    assert [m.data.count(b"DKIM-Signature:") for m in sink.handler.messages] == [0, 0]
