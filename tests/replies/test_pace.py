"""What keeps the replies engine in step with intake: batched hand-over, wake-ups across processes,
and a dispatcher where one slow receiver holds up no other."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from dovetail.replies.dispatcher import Dispatcher
from dovetail.replies.handover import Delivered, HandOver, PendingReplies
from dovetail.replies.pipeline import ReplyRecord, Source
from dovetail.replies.schema import reply_handovers
from dovetail.replies.service import RepliesService
from dovetail.replies.sources.local import LocalHook
from dovetail.replies.wake import WakeListener, WakeSender
from dovetail.storage import open_storage
from dovetail.storage.api import DeliveryId

from .mails import reply
from .receiver import Receiver


def _register(service: RepliesService) -> None:
    service.registry.register_outbound("acme", "Q1", message_id="<a@acme.example>",
                                       recipient="anna@client.example", subject="Quick question")


def test_a_batch_is_stored_in_one_go_and_a_bad_message_spoils_only_itself(service: RepliesService) -> None:
    _register(service)
    emitted: list[str] = []
    service.on_event(emitted.append)
    items = [(reply(in_reply_to="<a@acme.example>", message_id=f"<b{n}@c>"), Source("acme", "test", item=str(n)))
             for n in range(5)]
    items.insert(2, (reply(message_id="<stray@c>"), Source("nobody", "test", item="x")))  # unknown tenant
    out = service.pipeline.process_many(items)
    assert isinstance(out[2], Exception) and "unknown tenant" in str(out[2])
    records = [r for r in out if isinstance(r, ReplyRecord)]
    assert len(records) == 5 and all(r.match_method == "in_reply_to" and not r.duplicate for r in records)
    assert len(emitted) == 5
    again = service.pipeline.process_many(items[:2])  # the same positions again: stored once
    assert all(isinstance(r, ReplyRecord) and r.duplicate for r in again)
    assert len(emitted) == 5
    assert service.pipeline.process_many([]) == []


def _inbox(service: RepliesService, tmp_path: Path, count: int, prefix: str
           ) -> tuple[LocalHook, Path, list[str]]:
    """A reply inbox with ``count`` replies to the registered message delivered into it; their keys."""
    mail = tmp_path / "mail"
    maildir = mail / "acme" / "acme.example" / "replies"
    storage = open_storage(maildir, create=True)
    hook = LocalHook(service, cache_ttl=0, mail_root=mail)
    hook.mark("acme", "replies@acme.example")
    keys = []
    for n in range(count):
        stored = storage.deliver([reply(in_reply_to="<a@acme.example>", message_id=f"<{prefix}{n}@c>")],
                                 delivery_id=DeliveryId(f"{prefix}Q{n}", 0, 1.0))
        keys.append(stored.key)
    return hook, maildir, keys


def _recorded(service: RepliesService) -> list[str]:
    with service.engine.connect() as conn:  # a connection of its own: sees only what was committed
        return list(conn.execute(sa.select(reply_handovers.c.item).order_by(reply_handovers.c.id)).scalars())


def test_concurrent_hand_overs_share_a_durable_commit_and_each_returns_after_it(service: RepliesService,
                                                                                tmp_path: Path) -> None:
    """Deliveries finishing together are recorded in shared transactions (group commit), each one's call
    returns only once the transaction holding its records has committed, and the records wait for the
    replies service: the delivering process runs no pipeline."""
    _register(service)
    hook, maildir, keys = _inbox(service, tmp_path, 6, "h")
    wakes: list[int] = []
    hand_over = HandOver(hook, wake=lambda: wakes.append(1), max_batch=4)
    returned: dict[int, list[str]] = {}

    async def deliver(n: int, items: list[Delivered]) -> None:
        await hand_over(items)
        returned[n] = await asyncio.to_thread(_recorded, service)  # what was durable when it returned

    async def main() -> None:
        items = [Delivered("acme", "replies@acme.example", maildir, key) for key in keys]
        await asyncio.gather(deliver(0, items[:2]), deliver(1, items[2:5]), deliver(2, items[5:]))

    asyncio.run(main())
    for n, part in enumerate((keys[:2], keys[2:5], keys[5:])):
        assert set(part) <= set(returned[n])  # acknowledged after its own records were committed
    assert sorted(_recorded(service)) == sorted(keys)
    assert 1 <= len(wakes) <= 2  # once per committed batch, not once per message (6 records, batches of 4)
    assert service.queries.threads("acme") == []  # nothing threaded yet: that is the replies service's work
    pending = PendingReplies(hook)
    assert pending.work_off() == 6
    assert sum(t["reply_count"] for t in service.queries.threads("acme")) == 6
    assert _recorded(service) == []


def test_records_of_a_crash_are_worked_off_once_and_a_bad_one_is_dropped(service: RepliesService,
                                                                        tmp_path: Path) -> None:
    """A replies service that died after the pipeline stored some records but before it forgot them runs
    them again at start: every reply is stored once, and each fires its event once. A record naming no
    file of the Maildir is dropped; one the pipeline refuses is kept for a few polls, then dropped."""
    _register(service)
    emitted: list[str] = []
    service.on_event(emitted.append)
    hook, maildir, keys = _inbox(service, tmp_path, 5, "k")
    hand_over = HandOver(hook)
    items = [Delivered("acme", "replies@acme.example", maildir, key) for key in keys]
    items.append(Delivered("acme", "replies@acme.example", maildir, "../../escape"))
    items.append(Delivered("nobody", "replies@acme.example", tmp_path / "mail" / "nobody" / "x", keys[0]))
    hook.wants = lambda *_args: True  # type: ignore[method-assign]  # the unknown tenant's record too
    asyncio.run(hand_over(items))
    assert len(_recorded(service)) == 7
    # The crash: the pipeline stored three of them, and the service died before it deleted their records.
    service.pipeline.process_many([hook.load("acme", "replies@acme.example", maildir, key) for key in keys[:3]])
    assert len(emitted) == 3
    pending = PendingReplies(hook, max_attempts=2)  # the service, started again
    assert pending.work_off() == 7
    assert len(emitted) == 5  # the two not stored before; the three stored are recognised, not emitted again
    assert sum(t["reply_count"] for t in service.queries.threads("acme")) == 5
    assert _recorded(service) == [keys[0]]  # the unknown tenant's, refused once and kept for a retry
    assert pending.work_off() == 0  # failed records wait for a poll
    assert pending.work_off(retry_failed=True) == 1
    assert _recorded(service) == []  # refused twice: given up (and logged)
    assert len(emitted) == 5


def test_a_wake_up_crosses_processes_through_the_run_directory(tmp_path: Path) -> None:
    path = tmp_path / "replies.wake"
    WakeSender(path)()  # nobody listening: nothing happens, nothing raised

    async def main() -> int:
        woken = asyncio.Event()
        count = 0

        def on_wake() -> None:
            nonlocal count
            count += 1
            woken.set()

        listener = WakeListener(path, on_wake)
        listener.start()
        sender = WakeSender(path)
        for _ in range(3):
            sender()
        await asyncio.wait_for(woken.wait(), 10)
        listener.stop()
        sender.close()
        assert not path.exists()
        return count

    assert asyncio.run(main()) >= 1


def test_a_slow_receiver_holds_up_no_other(service: RepliesService) -> None:
    slow, fast = Receiver().start(), Receiver().start()
    try:
        slow.secret = service.outbox.add_endpoint("acme", slow.url)["secret"]
        fast.secret = service.outbox.add_endpoint("acme", fast.url)["secret"]
        _register(service)
        eids = [service.process_message(reply(in_reply_to="<a@acme.example>", message_id=f"<s{n}@c>"),
                                        Source("acme", "test")).events[0] for n in range(30)]
        slow.hold.clear()  # the slow receiver takes requests and does not answer

        async def main() -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(Dispatcher(service.outbox, concurrency=4, window=16,
                                                  poll_interval=0.2).run(stop))
            got = await asyncio.to_thread(fast.wait_for, 30, 30)
            assert {p["id"] for p in got} == set(eids)
            assert await asyncio.to_thread(slow.wait_started, 4)
            assert slow.started == 4  # never more than its share in flight
            slow.hold.set()
            await asyncio.to_thread(slow.wait_for, 30, 30)
            stop.set()
            await asyncio.wait_for(task, 20)

        asyncio.run(main())
        assert {p["id"] for p in slow.received} == set(eids)
    finally:
        slow.hold.set()
        slow.stop()
        fast.stop()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_dispatchers_on_several_nodes_claim_side_by_side(service: RepliesService) -> None:
    """Another node is in the middle of claiming five deliveries (its rows locked): this node's claim
    takes the other five at once instead of waiting behind it or coming back empty."""
    import threading

    import sqlalchemy as sa

    from dovetail.replies.schema import webhook_deliveries

    receiver = Receiver().start()
    try:
        service.outbox.add_endpoint("acme", receiver.url)
        _register(service)
        for n in range(10):
            service.process_message(reply(in_reply_to="<a@acme.example>", message_id=f"<k{n}@c>"),
                                    Source("acme", "test"))
        with service.engine.connect() as other:
            other.begin()
            held = set(other.execute(sa.select(webhook_deliveries.c.id).order_by(webhook_deliveries.c.id)
                                     .limit(5).with_for_update()).scalars())
            claimed: list[dict] = []
            worker = threading.Thread(target=lambda: claimed.extend(service.outbox.claim_due(time.time(), 50)))
            worker.start()
            worker.join(30)
            assert not worker.is_alive(), "the claim waited for the other node's locks"
            other.rollback()
        assert len(claimed) == 5 and not held & {d["id"] for d in claimed}
    finally:
        receiver.stop()


def test_the_dispatcher_keeps_its_connections_to_a_receiver_open(service: RepliesService) -> None:
    """Forty webhooks to one keep-alive receiver go over at most the endpoint's share of connections,
    not one connection each."""
    receiver = Receiver().start()
    try:
        receiver.secret = service.outbox.add_endpoint("acme", receiver.url)["secret"]
        _register(service)
        eids = [service.process_message(reply(in_reply_to="<a@acme.example>", message_id=f"<ka{n}@c>"),
                                        Source("acme", "test")).events[0] for n in range(40)]

        async def main() -> int:
            return await Dispatcher(service.outbox, concurrency=4, window=16).run_once()

        assert asyncio.run(main()) == 40
        assert {p["id"] for p in receiver.received} == set(eids)
        assert 1 <= receiver.connections <= 4
    finally:
        receiver.stop()


def test_a_wave_of_outcomes_and_the_next_claim_share_one_transaction(service: RepliesService) -> None:
    """One post at a time: each finished post is recorded in the transaction that claims the next (with
    leases), or the claim is a read and outcomes are recorded in groups (the sole dispatcher on SQLite),
    so ten webhooks take about ten write transactions, not twenty."""
    import sqlalchemy as sa

    receiver = Receiver().start()
    try:
        receiver.secret = service.outbox.add_endpoint("acme", receiver.url)["secret"]
        _register(service)
        eids = [service.process_message(reply(in_reply_to="<a@acme.example>", message_id=f"<w{n}@c>"),
                                        Source("acme", "test")).events[0] for n in range(10)]
        committed: list[int] = []  # read-only transactions end in a rollback
        listener = lambda _conn: committed.append(1)  # noqa: E731
        sa.event.listen(service.engine, "commit", listener)
        try:
            async def main() -> int:
                return await Dispatcher(service.outbox, concurrency=1, window=1).run_once()

            assert asyncio.run(main()) == 10
        finally:
            sa.event.remove(service.engine, "commit", listener)
        assert {p["id"] for p in receiver.received} == set(eids)
        assert 1 <= len(committed) <= 12
        assert {d["status"] for d in service.outbox.deliveries("acme")} == {"delivered"}
    finally:
        receiver.stop()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_on_sqlite_one_dispatcher_posts_and_it_takes_no_leases(service: RepliesService) -> None:
    """The sole dispatcher of an SQLite database keeps its claims in memory (no lease is written while its
    posts are in flight), and a second dispatcher posts nothing while the first runs."""
    import sqlalchemy as sa

    from dovetail.replies.schema import webhook_deliveries

    receiver = Receiver().start()
    try:
        receiver.secret = service.outbox.add_endpoint("acme", receiver.url)["secret"]
        _register(service)
        eids = [service.process_message(reply(in_reply_to="<a@acme.example>", message_id=f"<so{n}@c>"),
                                        Source("acme", "test")).events[0] for n in range(5)]
        receiver.hold.clear()

        def leases() -> list[object]:
            with service.engine.connect() as conn:
                return list(conn.execute(sa.select(webhook_deliveries.c.locked_until)).scalars())

        async def main() -> int:
            stop = asyncio.Event()
            first = asyncio.create_task(Dispatcher(service.outbox, poll_interval=0.1).run(stop))
            assert await asyncio.to_thread(receiver.wait_started, 5)
            assert await asyncio.to_thread(leases) == [None] * 5
            assert await Dispatcher(service.outbox).run_once() == 0  # the first one holds the role
            receiver.hold.set()
            await asyncio.to_thread(receiver.wait_for, 5, 20)
            stop.set()
            await asyncio.wait_for(first, 10)
            return await Dispatcher(service.outbox).run_once()  # the role is free again; nothing left

        assert asyncio.run(main()) == 0
        assert sorted(p["id"] for p in receiver.received) == sorted(eids)
        assert {d["status"] for d in service.outbox.deliveries("acme")} == {"delivered"}
    finally:
        receiver.hold.set()
        receiver.stop()
