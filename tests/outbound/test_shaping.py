"""Shaping per destination, observed at two MX sinks on loopback reached through the loopback DNS.

``a.example`` has its MX at 127.0.0.1 and ``b.example`` at 127.0.0.3 (``mx1.mx-b.test``), the same
port: the agent has one MX port, as port 25 in production. The sinks count sessions in flight,
connections and the peer address, and can answer MAIL with a scripted reply (421: throttling).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from dovetail.outbound.delivery import AgentConfig, OutboundAgent
from dovetail.outbound.keys import DkimKeys
from dovetail.outbound.mx import MxResolver
from dovetail.outbound.shaping import Limits, ShapingConfig
from dovetail.outbound.transports import TransportError, Transports
from dovetail.queue import Envelope, Queue, QueuedMessage, QueueRecipient

from .dnsserver import free_port
from .sink import SinkHandler

MESSAGE = (b"From: Alice <alice@acme.example>\r\nTo: x@a.example\r\nSubject: hi\r\n"
           b"Message-ID: <s1@acme.example>\r\nDate: Sat, 28 Nov 2026 10:00:00 +0000\r\n\r\nHello.\r\n")


@dataclass
class ShapingSink(SinkHandler):
    """Holds each DATA until ``release_at`` transactions are in flight (or 2 s passed), so that a limit
    that did not hold would show as more sessions in flight than it allows."""

    release_at: int = 1
    mail_reply: str | None = None
    in_flight: int = 0
    max_in_flight: int = 0
    mail_times: list[float] = field(default_factory=list)
    peer_ips: list[str] = field(default_factory=list)
    _full: asyncio.Event | None = None

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: ANN001, ANN201
        with self.lock:
            if session.peer not in self.peers:
                self.peer_ips.append(session.peer[0])
        return await super().handle_EHLO(server, session, envelope, hostname, responses)

    async def handle_MAIL(self, server, session, envelope, address, mail_options):  # noqa: ANN001, ANN201
        with self.lock:
            self.mail_times.append(time.monotonic())
            if self.mail_reply:
                return self.mail_reply
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            if self._full is None:
                self._full = asyncio.Event()
            if self.in_flight >= self.release_at:
                self._full.set()
        envelope.mail_from = address
        return "250 2.1.0 Ok"

    async def handle_DATA(self, server, session, envelope):  # noqa: ANN001, ANN201
        assert self._full is not None
        try:
            await asyncio.wait_for(self._full.wait(), 2.0)
        except TimeoutError:
            pass
        with self.lock:
            self.in_flight -= 1
        return await super().handle_DATA(server, session, envelope)


class Sinks:
    """Two MX sinks on one port: 127.0.0.1 for a.example, 127.0.0.3 for b.example."""

    def __init__(self, a: ShapingSink, b: ShapingSink) -> None:
        self.a, self.b = a, b
        self.port = 0
        self.controllers: list[Controller] = []

    def __enter__(self) -> Sinks:
        for _ in range(20):
            port = free_port()
            started = []
            try:
                for host, handler in (("127.0.0.1", self.a), ("127.0.0.3", self.b)):
                    ctl = Controller(handler, hostname=host, port=port)
                    ctl.start()
                    started.append(ctl)
            except (OSError, RuntimeError):
                for ctl in started:
                    ctl.stop()
                continue
            self.port, self.controllers = port, started
            return self
        raise RuntimeError("no port free on both 127.0.0.1 and 127.0.0.3")

    def __exit__(self, *exc: object) -> None:
        for ctl in self.controllers:
            ctl.stop()


@pytest.fixture
def mx_dns(dns_server):  # noqa: ANN001, ANN201
    dns_server.mx("a.example", "mx.a.example", 10)
    dns_server.a("mx.a.example", "127.0.0.1")
    dns_server.mx("b.example", "mx1.mx-b.test", 10)
    dns_server.a("mx1.mx-b.test", "127.0.0.3")
    return dns_server


def agent_for(world, dns_server, port: int, shaping: ShapingConfig) -> OutboundAgent:  # noqa: ANN001
    config = AgentConfig(hostname="out.dovetail.test", mx_port=port, connect_timeout=5, command_timeout=5,
                         shaping=shaping)
    return OutboundAgent(Transports(world.engine), DkimKeys(world.engine, world.dkim_dir), config,
                         mx=MxResolver(dns_server.async_resolver(), fetch_policy=_no_policy))


async def _no_policy(domain: str) -> None:
    return None


def queued(tmp_path: Path, recipients: list[str], sender: str = "alice@acme.example") -> QueuedMessage:
    queue = Queue(tmp_path / "queue")
    qid = queue.inject(Envelope(sender=sender, recipients=[QueueRecipient(r) for r in recipients]), MESSAGE)
    return QueuedMessage(qid, queue.path("incoming", qid))


async def deliver_all(agent: OutboundAgent, messages: list[QueuedMessage]) -> list:  # noqa: ANN001
    results = await asyncio.gather(*(agent.deliver(m, m.envelope.pending()) for m in messages))
    return [r for batch in results for r in batch]


def test_concurrency_per_destination_is_never_exceeded_at_the_sink(world, mx_dns, tmp_path) -> None:
    """a.example by its own override (2); b.example by the MX-host pattern *.mx-b.test (3)."""
    a, b = ShapingSink(release_at=2), ShapingSink(release_at=3)
    shaping = ShapingConfig(concurrency=20, overrides={"a.example": Limits(2), "*.mx-b.test": Limits(3)})
    with Sinks(a, b) as sinks:
        agent = agent_for(world, mx_dns, sinks.port, shaping)

        async def run() -> list:  # noqa: ANN001
            try:
                return await deliver_all(agent, [queued(tmp_path, [f"u{i}@a.example"]) for i in range(8)]
                                         + [queued(tmp_path, [f"u{i}@b.example"]) for i in range(9)])
            finally:
                await agent.close()

        results = asyncio.run(run())
    assert all(r.status == "sent" for r in results), [r.reason for r in results if r.status != "sent"]
    assert len(a.messages) == 8 and len(b.messages) == 9
    assert a.max_in_flight == 2  # reached, never passed
    assert b.max_in_flight == 3
    counts = agent.shaper.snapshot()["counts"]
    assert counts["a.example"]["delivered"] == 8 and counts["*.mx-b.test"]["delivered"] == 9


def test_rate_spaces_deliveries_and_defers_beyond_the_wait(world, mx_dns, tmp_path) -> None:
    a, b = ShapingSink(), ShapingSink()
    shaping = ShapingConfig(overrides={"a.example": Limits(20, (2, 1.0)), "b.example": Limits(20, (1, 60.0))},
                            rate_wait_max=2.0)
    with Sinks(a, b) as sinks:
        agent = agent_for(world, mx_dns, sinks.port, shaping)

        async def run() -> list:  # noqa: ANN001
            try:
                return await deliver_all(agent, [queued(tmp_path, [f"u{i}@a.example"]) for i in range(4)]
                                         + [queued(tmp_path, [f"u{i}@b.example"]) for i in range(2)])
            finally:
                await agent.close()

        results = asyncio.run(run())
    a_results = [r for r in results if r.recipient.address.endswith("@a.example")]
    assert all(r.status == "sent" for r in a_results)
    gaps = [later - earlier for earlier, later in zip(a.mail_times, a.mail_times[1:], strict=False)]
    # 2/s: a turn every 0.5 s (seen at the sink, less the time a new connection takes before MAIL)
    assert len(gaps) == 3 and min(gaps) >= 0.3, gaps
    assert a.mail_times[-1] - a.mail_times[0] >= 1.3, gaps
    # 1/min with at most 2 s of waiting: the second is deferred, with no connection for it.
    by_status = sorted(r.status for r in results if r.recipient.address.endswith("@b.example"))
    assert by_status == ["deferred", "sent"]
    [late] = [r for r in results if r.recipient.address.endswith("@b.example") and r.status == "deferred"]
    assert late.dsn_code == "4.7.0" and "rate limited, next try in 60 s" in late.reason
    assert len(b.messages) == 1 and len(b.mail_times) == 1


def test_throttling_reply_pauses_the_destination_without_connecting(world, mx_dns, tmp_path) -> None:
    a, b = ShapingSink(), ShapingSink(mail_reply="421 4.7.0 Try again later, closing connection")
    now = [1000.0]
    with Sinks(a, b) as sinks:
        agent = agent_for(world, mx_dns, sinks.port, ShapingConfig(pause=60, pause_max=100))
        agent.shaper.clock = lambda: now[0]

        async def run() -> None:
            try:
                [first] = await agent.deliver(m := queued(tmp_path, ["x@b.example"]), m.envelope.pending())
                assert first.status == "deferred" and first.dsn_code == "4.7.0" and "said: 421" in first.reason
                assert b.sessions == 1 and agent.shaper.paused("b.example") == 60
                # Paused: deferred at once, no connection; other destinations are not held up.
                [second] = await agent.deliver(m := queued(tmp_path, ["y@b.example"]), m.envelope.pending())
                assert second.status == "deferred" and second.dsn_code == "4.4.5"
                assert "destination b.example is paused for another 60 s" in second.reason
                assert "421 4.7.0 Try again later" in second.reason
                assert b.sessions == 1 and len(b.mail_times) == 1
                [other] = await agent.deliver(m := queued(tmp_path, ["z@a.example"]), m.envelope.pending())
                assert other.status == "sent"
                # Still throttling after the pause: the next pause is twice as long.
                now[0] += 61
                [third] = await agent.deliver(m := queued(tmp_path, ["y@b.example"]), m.envelope.pending())
                assert third.status == "deferred" and "said: 421" in third.reason
                assert b.sessions == 2 and agent.shaper.paused("b.example") == 100  # doubled, capped
                # The destination recovers: the first delivery after the pause ends it.
                now[0] += 101
                b.mail_reply = None
                [fourth] = await agent.deliver(m := queued(tmp_path, ["y@b.example"]), m.envelope.pending())
                assert fourth.status == "sent" and agent.shaper.paused("b.example") == 0
                b.mail_reply = "421 4.7.0 Try again later, closing connection"
                await agent.deliver(m := queued(tmp_path, ["w@b.example"]), m.envelope.pending())
                assert agent.shaper.paused("b.example") == 60  # back to the first step
            finally:
                await agent.close()

        asyncio.run(run())
    snap = agent.shaper.snapshot()
    assert snap["counts"]["b.example"] == {"delivered": 1, "deferred": 4, "bounced": 0}
    assert snap["paused"] == {"b.example": 60.0}


def test_bind_address_per_tenant_is_the_peer_address_and_sessions_are_not_shared(world, mx_dns, tmp_path) -> None:
    transports = Transports(world.engine)
    rule = transports.set("tenant", "acme", "mx", bind_address="127.0.0.2")
    assert rule.bind_address == "127.0.0.2"
    a, b = ShapingSink(), ShapingSink()
    with Sinks(a, b) as sinks:
        config = AgentConfig(hostname="out.dovetail.test", mx_port=sinks.port, connect_timeout=5, command_timeout=5,
                             connection_cache_time=30)
        agent = OutboundAgent(transports, DkimKeys(world.engine, world.dkim_dir), config,
                              mx=MxResolver(mx_dns.async_resolver(), fetch_policy=_no_policy))

        async def run() -> list:  # noqa: ANN001
            try:
                out = []
                for sender in ("alice@acme.example", "gina@globex.example", "alice@acme.example"):
                    msg = queued(tmp_path, ["bob@a.example"], sender=sender)
                    out += await agent.deliver(msg, msg.envelope.pending())
                return out
            finally:
                await agent.close()

        results = asyncio.run(run())
    assert [r.status for r in results] == ["sent", "sent", "sent"]
    assert [m.sender for m in a.messages] == ["alice@acme.example", "gina@globex.example", "alice@acme.example"]
    # acme's connection comes from 127.0.0.2 and is reused for acme only; globex gets its own.
    assert a.peer_ips == ["127.0.0.2", "127.0.0.1"]
    assert agent.connections_made == 2 and agent.connections_reused == 1


def test_bind_address_that_is_not_ours_is_refused_and_nothing_saved(world) -> None:
    transports = Transports(world.engine)
    for bad, why in (("192.0.2.1", "not an address of this machine"), ("banana", "not an IP address"),
                     ("0.0.0.0", "must be one address")):
        with pytest.raises(TransportError, match=why):
            transports.set("tenant", "acme", "mx", bind_address=bad)
    assert transports.list() == []


def test_throttling_in_reply_to_rcpt_keeps_the_reply_for_every_recipient(world, mx_dns, tmp_path) -> None:
    @dataclass
    class RcptThrottle(ShapingSink):
        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: ANN001, ANN201
            return "421 4.7.28 Our system has detected an unusual rate of unsolicited mail"

    a, b = ShapingSink(), RcptThrottle()
    with Sinks(a, b) as sinks:
        agent = agent_for(world, mx_dns, sinks.port, ShapingConfig())

        async def run() -> list:  # noqa: ANN001
            try:
                msg = queued(tmp_path, ["p@b.example", "q@b.example"])
                return await agent.deliver(msg, msg.envelope.pending())
            finally:
                await agent.close()

        results = asyncio.run(run())
    assert [r.dsn_code for r in results] == ["4.7.28", "4.7.28"]
    assert all("said: 421 4.7.28" in r.reason for r in results)
    assert agent.shaper.paused("b.example") > 0


def test_shares_across_processes() -> None:
    cfg = ShapingConfig(concurrency=20, rate=(600, 60.0), processes=3)
    name, limits = cfg.destination("example.org")
    assert name == "example.org" and limits.concurrency == 7 and limits.interval == pytest.approx(0.3)
    cfg = ShapingConfig(overrides={"gmail.com": Limits(10), "*.google.com": Limits(5), "*.l.google.com": Limits(4)})
    assert cfg.destination("gmail.com")[0] == "gmail.com"
    assert cfg.destination("hosted.example", ["alt1.aspmx.l.google.com"])[0] == "*.l.google.com"
    assert cfg.destination("mail.google.com")[0] == "*.google.com"
    assert cfg.destination("google.com")[0] == "google.com"  # *.suffix is for names under it
    ses = "email-smtp.eu-west-1.amazonaws.com"
    assert cfg.for_relay(ses, 587)[0] == f"relay:[{ses}]:587"


def test_counters_bounded_to_top_n_and_other() -> None:
    from dovetail.outbound.shaping import TOP_N, Shaper, merge

    shaper = Shaper()
    for i in range(TOP_N + 5):
        shaper.count(f"d{i:02}.example", "delivered", n=100 - i)
    snap = shaper.snapshot()
    assert len(snap["counts"]) == TOP_N + 1
    assert snap["counts"]["d00.example"]["delivered"] == 100
    assert snap["counts"]["other"]["delivered"] == sum(100 - i for i in range(TOP_N, TOP_N + 5))
    merged = merge([snap, snap])
    assert merged["counts"]["d00.example"]["delivered"] == 200 and len(merged["counts"]) == TOP_N + 1



def test_relay_answering_ses_throttling_is_paused_as_a_destination(world, tmp_path) -> None:
    handler = ShapingSink(mail_reply="454 4.7.0 Throttling failure: Maximum sending rate exceeded.")
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        transports = Transports(world.engine)
        transports.set("default", "*", "relay", host="127.0.0.1", port=port, tls="none", check_host=None)
        agent = OutboundAgent(transports, DkimKeys(world.engine, world.dkim_dir),
                              AgentConfig(hostname="out.dovetail.test", connect_timeout=5, command_timeout=5))

        async def run() -> list:  # noqa: ANN001
            try:
                out = []
                for rcpt in ("p@a.example", "q@b.example"):
                    msg = queued(tmp_path, [rcpt])
                    out += await agent.deliver(msg, msg.envelope.pending())
                return out
            finally:
                await agent.close()

        first, second = asyncio.run(run())
    finally:
        controller.stop()
    destination = f"relay:[127.0.0.1]:{port}"
    assert first.dsn_code == "4.7.0" and "said: 454 4.7.0 Throttling failure" in first.reason
    assert second.dsn_code == "4.4.5" and f"destination {destination} is paused" in second.reason
    assert handler.sessions == 1 and len(handler.mail_times) == 1


def test_idle_destination_state_is_forgotten_past_the_bound(monkeypatch) -> None:  # noqa: ANN001
    from dovetail.outbound import shaping

    monkeypatch.setattr(shaping, "STATES_MAX", 3)
    shaper = shaping.Shaper(ShapingConfig(), clock=lambda: 500.0)

    async def run() -> None:
        async with shaper.session("busy.example", Limits(1)):
            for name in ("a.example", "b.example"):
                async with shaper.session(name, Limits(1)):
                    pass
            shaper.throttled("b.example", "host mx said: 421 go away")
            async with shaper.session("c.example", Limits(1)):  # the fourth: a.example is forgotten
                pass
            assert set(shaper._states) == {"busy.example", "b.example", "c.example"}

    asyncio.run(run())
