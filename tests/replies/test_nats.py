"""Events published to a real NATS JetStream server through ``nats:`` endpoints of the outbox."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from dovetail.replies import signing
from dovetail.replies.broker import NatsPublisher
from dovetail.replies.dispatcher import Dispatcher
from dovetail.replies.pipeline import Source
from dovetail.replies.registry import RegistryError
from dovetail.replies.service import RepliesService
from dovetail.sealing import Sealer
from tests.natsserver import NatsServer

from .mails import reply

STREAM = "TEST_EVENTS"


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "jetstream").start()
    yield server
    server.stop()


@pytest.fixture
def broker_service(engine: Engine, secret: bytes) -> RepliesService:
    return RepliesService(engine, secret, sealer=Sealer(os.urandom(32)), broker=True)


def _stream(url: str) -> list[Any]:
    """Every message of the stream, read back with nats-py."""
    import nats

    async def main() -> list[Any]:
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            info = await js.stream_info(STREAM)
            return [await js.get_msg(STREAM, seq) for seq in range(info.state.first_seq, info.state.last_seq + 1)]
        finally:
            await nc.close()

    return asyncio.run(main())


def _event(service: RepliesService, n: int) -> str:
    return service.process_message(reply(in_reply_to="<a@acme.example>", message_id=f"<n{n}@c>"),
                                   Source("acme", "test")).events[0]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_events_reach_the_stream_once_signed_under_the_tenants_subject(
        broker_service: RepliesService, nats_server: NatsServer) -> None:
    service = broker_service
    secret = service.outbox.add_endpoint("acme", "NATS:", ["reply.received"])["secret"]
    service.registry.register_outbound("acme", "Q1", message_id="<a@acme.example>", recipient="anna@client.example")
    eid = _event(service, 1)
    publisher = NatsPublisher(nats_server.url, stream=STREAM, prefix="dovetail", timeout=5)
    assert asyncio.run(Dispatcher(service.outbox, broker=publisher).run_once()) == 1
    [row] = service.outbox.deliveries("acme")
    assert (row["status"], row["attempts"]) == ("delivered", 1)
    [msg] = _stream(nats_server.url)
    assert msg.subject == "dovetail.acme.reply.received"
    assert msg.headers["Nats-Msg-Id"] == eid
    payload = signing.verify(secret, dict(msg.headers), msg.data)
    assert payload["id"] == eid and payload["tenant"] == "acme"
    # Posted again (an acknowledgement lost, an operator's redeliver): the stream keeps one copy.
    assert service.outbox.redeliver("acme", row["id"])
    assert asyncio.run(Dispatcher(service.outbox, broker=publisher).run_once()) == 1
    assert [m.headers["Nats-Msg-Id"] for m in _stream(nats_server.url)] == [eid]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_broker_that_is_away_gets_the_event_when_it_is_back(
        broker_service: RepliesService, nats_server: NatsServer) -> None:
    service = broker_service
    service.outbox.add_endpoint("acme", "nats:")
    publisher = NatsPublisher(nats_server.url, stream=STREAM, prefix="dovetail", timeout=2)
    first = _event(service, 1)
    assert asyncio.run(Dispatcher(service.outbox, broker=publisher).run_once()) == 1
    nats_server.stop()
    second = _event(service, 2)
    now = [time.time()]
    dispatcher = Dispatcher(service.outbox, broker=publisher, clock=lambda: now[0])
    assert asyncio.run(dispatcher.run_once()) == 1
    pending = [d for d in service.outbox.deliveries("acme") if d["status"] == "pending"]
    assert len(pending) == 1 and "cannot connect" in (pending[0]["last_error"] or "")
    nats_server.start()  # same store: the first event is still there
    now[0] += 3600
    assert asyncio.run(dispatcher.run_once()) == 1
    assert [m.headers["Nats-Msg-Id"] for m in _stream(nats_server.url)] == [first, second]
    assert all(d["status"] == "delivered" for d in service.outbox.deliveries("acme"))


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_nats_endpoints_need_the_operators_server(service: RepliesService) -> None:
    with pytest.raises(RegistryError, match="events.nats_url"):
        service.outbox.add_endpoint("acme", "nats:")
    with pytest.raises(RegistryError, match="not an http"):
        service.outbox.add_endpoint("acme", "nats://evil.example:4222")
    assert json.dumps(service.outbox.endpoints("acme")) == "[]"


def test_subjects_hold_no_wildcards() -> None:
    publisher = NatsPublisher("nats://127.0.0.1:1", stream=STREAM, prefix="dovetail.")
    assert publisher.subject({"tenant": "acme", "type": "message.delivered"}) == "dovetail.acme.message.delivered"
    assert publisher.subject({"tenant": "a*b", "type": "x.>"}) == "dovetail.a_b.x._"
    assert publisher.subject({}) == "dovetail._.event"
    nested = NatsPublisher("nats://127.0.0.1:1", stream=STREAM, prefix="acme.mail")  # the stream takes acme.mail.>
    assert nested.subject({"tenant": "t", "type": "reply.received"}) == "acme.mail.t.reply.received"


@pytest.mark.parametrize(("key", "value"), [("events.nats_url", "http://127.0.0.1:4222"),
                                            ("events.nats_url", "nats://"),
                                            ("events.nats_subject_prefix", "a.>"),
                                            ("events.nats_subject_prefix", "two words")])
def test_bad_nats_settings_are_refused(key: str, value: str) -> None:
    from dovetail.config import ConfigError, validate

    with pytest.raises((ConfigError, ValueError)):
        validate(key, value)
