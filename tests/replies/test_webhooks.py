"""Signed webhooks to a real HTTP receiver: retries, restarts, 410, dead letters, verification."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import pytest

from dovetail.replies import signing
from dovetail.replies.dispatcher import Dispatcher
from dovetail.replies.outbox import RetrySchedule
from dovetail.replies.pipeline import Source
from dovetail.replies.service import RepliesService

from .mails import reply
from .receiver import Receiver


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


def _setup(service: RepliesService, receiver: Receiver, types: list[str] | None = None) -> dict:
    ep = service.outbox.add_endpoint("acme", receiver.url, types)
    receiver.secret = ep["secret"]
    service.registry.register_outbound("acme", "Q1", message_id="<a@acme.example>",
                                       recipient="anna@client.example", subject="Quick question")
    return ep


def _reply(service: RepliesService, n: int) -> str:
    rec = service.process_message(reply(in_reply_to="<a@acme.example>", message_id=f"<r{n}@c>"),
                                  Source("acme", "test"))
    return rec.events[0]


def test_default_schedule_spans_a_day() -> None:
    schedule = RetrySchedule()
    assert schedule.total >= 24 * 3600
    assert list(schedule.delays) == sorted(schedule.delays)


def test_signed_event_reaches_receiver(service: RepliesService, receiver: Receiver) -> None:
    _setup(service, receiver)
    eid = _reply(service, 1)
    assert asyncio.run(Dispatcher(service.outbox).run_once()) == 1
    got = receiver.wait_for(1)
    assert receiver.rejected == []
    assert got[0]["id"] == eid and got[0]["type"] == "reply.received"
    assert got[0]["data"]["campaign"]["name"] == "Q1"
    assert receiver.headers[0]["webhook-id"] == eid
    assert service.outbox.deliveries("acme")[0]["status"] == "delivered"
    assert asyncio.run(Dispatcher(service.outbox).run_once()) == 0  # nothing due twice


def test_receiver_down_then_back(service: RepliesService, receiver: Receiver) -> None:
    _setup(service, receiver)
    eid = _reply(service, 1)
    port = receiver.port
    receiver.stop()
    clock = Clock()
    schedule = RetrySchedule((0, 60, 600))
    d = Dispatcher(service.outbox, schedule=schedule, clock=clock)
    assert asyncio.run(d.run_once()) == 1  # connection refused
    [row] = service.outbox.deliveries("acme")
    assert row["status"] == "pending" and row["attempts"] == 1 and row["last_error"]
    assert asyncio.run(d.run_once()) == 0  # not due before the backoff
    back = Receiver(port=port)
    back.secret = receiver.secret
    back.start()
    try:
        clock.now += 61
        assert asyncio.run(d.run_once()) == 1
        assert [p["id"] for p in back.wait_for(1)] == [eid]
    finally:
        back.stop()
    assert service.outbox.deliveries("acme")[0]["status"] == "delivered"


def test_dead_letter_after_last_try_and_redeliver(service: RepliesService, receiver: Receiver) -> None:
    _setup(service, receiver)
    _reply(service, 1)
    receiver.status = 500
    clock = Clock()
    d = Dispatcher(service.outbox, schedule=RetrySchedule((0, 10, 20)), clock=clock)
    for step in (0, 10, 20):
        clock.now += step
        assert asyncio.run(d.run_once()) == 1
    [row] = service.outbox.deliveries("acme")
    assert (row["status"], row["attempts"], row["last_status"]) == ("dead", 3, 500)
    clock.now += 10_000
    assert asyncio.run(d.run_once()) == 0
    receiver.status = 200
    assert service.outbox.redeliver("acme", row["id"], now=clock.now)
    assert not service.outbox.redeliver("other", row["id"], now=clock.now)  # not theirs
    assert asyncio.run(d.run_once()) == 1
    assert len(receiver.wait_for(1)) == 1
    assert service.outbox.deliveries("acme")[0]["status"] == "delivered"


def test_410_stops_and_disables_endpoint(service: RepliesService, receiver: Receiver) -> None:
    ep = _setup(service, receiver)
    _reply(service, 1)
    receiver.status = 410
    clock = Clock()
    d = Dispatcher(service.outbox, clock=clock)
    assert asyncio.run(d.run_once()) == 1
    assert service.outbox.deliveries("acme")[0]["status"] == "gone"
    assert [e["enabled"] for e in service.outbox.endpoints("acme") if e["id"] == ep["id"]] == [False]
    _reply(service, 2)  # a disabled endpoint gets no new deliveries
    clock.now += 100_000
    assert asyncio.run(d.run_once()) == 0


def test_restart_loses_nothing_and_duplicates_nothing(service: RepliesService, receiver: Receiver) -> None:
    _setup(service, receiver)
    first = [_reply(service, n) for n in range(3)]
    asyncio.run(Dispatcher(service.outbox).run_once())
    later = [_reply(service, n) for n in range(3, 6)]  # stored while no dispatcher runs
    clock = Clock()
    # A dispatcher dies after claiming (leasing) a batch, before posting anything.
    crashed = service.outbox.claim_due(clock.now, limit=2, lease=30)
    assert len(crashed) == 2
    fresh = Dispatcher(service.outbox, clock=clock, lease=30, timeout=5)
    assert asyncio.run(fresh.run_once()) == 1  # the leased two wait for the lease to expire
    clock.now += 31
    assert asyncio.run(fresh.run_once()) == 2
    ids = [p["id"] for p in receiver.wait_for(6)]
    assert sorted(ids) == sorted(first + later)
    assert len(ids) == len(set(ids))


def test_dispatcher_stopped_mid_batch_gives_its_claims_back(service: RepliesService, receiver: Receiver) -> None:
    """Cancelled with a batch claimed (8 posts in flight, the rest waiting for a slot), a dispatcher
    releases its leases: the next one posts everything now, not when the 60 s leases run out."""
    _setup(service, receiver)
    eids = [_reply(service, n) for n in range(12)]
    receiver.hold.clear()

    async def main() -> None:
        crashed = asyncio.create_task(Dispatcher(service.outbox, concurrency=8).run(asyncio.Event()))
        assert await asyncio.to_thread(receiver.wait_started, 8)
        crashed.cancel()
        await asyncio.gather(crashed, return_exceptions=True)
        receiver.hold.set()
        stop = asyncio.Event()
        fresh = asyncio.create_task(Dispatcher(service.outbox, poll_interval=0.1).run(stop))
        await asyncio.to_thread(receiver.wait_for, 12, 20)
        stop.set()
        await asyncio.wait_for(fresh, 10)

    asyncio.run(main())
    assert {p["id"] for p in receiver.received} == set(eids)  # repeats of in-flight posts are allowed


def test_dispatcher_run_loop_wakes_on_new_events(service: RepliesService, receiver: Receiver) -> None:
    _setup(service, receiver)

    async def main() -> list[str]:
        d = Dispatcher(service.outbox, poll_interval=30)
        service.on_event(lambda _eid: loop.call_soon_threadsafe(d.wake))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        task = asyncio.create_task(d.run(stop))
        eids = [await asyncio.to_thread(_reply, service, n) for n in range(2)]
        await asyncio.to_thread(receiver.wait_for, 2, 10)
        stop.set()
        await asyncio.wait_for(task, 10)
        return eids

    eids = asyncio.run(main())
    assert sorted(p["id"] for p in receiver.received) == sorted(eids)


def test_verify_rejects_bad_signature_and_replays() -> None:
    secret = signing.new_secret()
    body = json.dumps({"id": "evt_1"}).encode()
    now = 1_800_000_000
    headers = signing.signed_headers(secret, "evt_1", now, body)
    assert signing.verify(secret, headers, body, now=now) == {"id": "evt_1"}
    with pytest.raises(signing.WebhookVerificationError):
        signing.verify(secret, headers, body + b" ", now=now)
    with pytest.raises(signing.WebhookVerificationError):
        signing.verify(signing.new_secret(), headers, body, now=now)
    with pytest.raises(signing.WebhookVerificationError, match="too old"):
        signing.verify(secret, headers, body, now=now + 301)
    with pytest.raises(signing.WebhookVerificationError, match="future"):
        signing.verify(secret, headers, body, now=now - 301)
    forged = dict(headers, **{"webhook-id": "evt_2"})
    with pytest.raises(signing.WebhookVerificationError):
        signing.verify(secret, forged, body, now=now)
    # Several signatures (key rotation): any matching one is accepted.
    multi = dict(headers, **{"webhook-signature": "v1,bogus " + headers["webhook-signature"]})
    assert signing.verify(secret, multi, body, now=now)


def test_known_vector() -> None:
    # The example of the Standard Webhooks specification.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    assert signing.sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == \
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_webhook_urls_are_logged_without_credentials() -> None:
    from dovetail.replies.dispatcher import _without_credentials

    assert _without_credentials("https://user:s3cret@hooks.example/x?a=1") == "https://hooks.example/x?a=1"
    assert _without_credentials("https://hooks.example:8443/x") == "https://hooks.example:8443/x"
    assert "s3cret" not in _without_credentials("http://u:s3cret@[::1]:8080/p")


def test_signing_secret_is_sealed_at_rest_and_never_posts_unopened(service: RepliesService,
                                                                     receiver: Receiver) -> None:
    import os

    import sqlalchemy as sa

    from dovetail.replies.outbox import Outbox
    from dovetail.replies.schema import webhook_endpoints
    from dovetail.sealing import Sealer

    ep = _setup(service, receiver)
    with service.engine.connect() as conn:
        stored = conn.execute(sa.select(webhook_endpoints.c.secret)).scalar_one()
    assert stored.startswith("sealed:v1:") and ep["secret"] not in stored
    _reply(service, 1)
    # A database moved without its data directory's key: the delivery fails with a reason, unposted.
    stranger = Outbox(service.engine, sealer=Sealer(os.urandom(32)))
    assert asyncio.run(Dispatcher(stranger).run_once()) == 1
    [row] = service.outbox.deliveries("acme")
    assert row["status"] == "pending" and "cannot be opened" in row["last_error"]
    assert receiver.received == []
    # With the right key the same delivery goes out, signed with the secret shown at creation.
    service.outbox.redeliver("acme", row["id"])
    assert asyncio.run(Dispatcher(service.outbox).run_once()) == 1
    assert len(receiver.wait_for(1)) == 1 and receiver.rejected == []
