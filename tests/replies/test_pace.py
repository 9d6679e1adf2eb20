"""What keeps the replies engine in step with intake: batched hand-over, wake-ups across processes,
and a dispatcher where one slow receiver holds up no other."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from dovetail.replies.dispatcher import Dispatcher
from dovetail.replies.handover import Delivered, HandOver
from dovetail.replies.pipeline import ReplyRecord, Source
from dovetail.replies.schema import replies
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


def _inbox(service: RepliesService, tmp_path: Path, count: int, prefix: str) -> tuple[LocalHook, Path, list[str]]:
    """A reply inbox holding ``count`` replies to the registered message; their storage keys."""
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


def _stored_message_ids(service: RepliesService) -> set[str]:
    with service.engine.connect() as conn:  # a connection of its own: sees only what was committed
        return set(conn.execute(sa.select(replies.c.message_id)).scalars())


def test_concurrent_hand_overs_share_durable_commits_and_each_returns_after_its_own(service: RepliesService,
                                                                                  tmp_path: Path) -> None:
    """Deliveries finishing together share transactions (group commit: one fsync for several), each
    committed at full safety on SQLite, and each delivery's call returns only once its replies are
    committed (what a 250 then acknowledges)."""
    _register(service)
    hook, maildir, keys = _inbox(service, tmp_path, 6, "h")
    statements: list[str] = []

    def seen(_conn, _cursor, statement, *_args) -> None:  # noqa: ANN001
        statements.append(statement)

    wakes: list[int] = []
    hand_over = HandOver(hook, wake=lambda: wakes.append(1), max_batch=4)
    committed_at_return: dict[int, set[str]] = {}

    async def deliver(n: int, items: list[Delivered]) -> None:
        await hand_over(items)
        committed_at_return[n] = await asyncio.to_thread(_stored_message_ids, service)

    async def main() -> None:
        items = [Delivered("acme", "replies@acme.example", maildir, key) for key in keys]
        items.append(Delivered("acme", "replies@acme.example", maildir, "../../escape"))  # refused, logged
        # Three deliveries finishing together: their hand-overs share batches.
        await asyncio.gather(deliver(0, items[:2]), deliver(1, items[2:5]), deliver(2, items[5:]))

    sa.event.listen(service.engine, "before_cursor_execute", seen)
    try:
        asyncio.run(main())
    finally:
        sa.event.remove(service.engine, "before_cursor_execute", seen)
    for n, part in enumerate((range(0, 2), range(2, 5), range(5, 6))):
        assert {f"h{i}@c" for i in part} <= committed_at_return[n]
    assert sum(t["reply_count"] for t in service.queries.threads("acme")) == 6
    assert 1 <= len(wakes) <= 2  # once per committed batch that stored events, not once per message
    if service.engine.dialect.name == "sqlite":
        batches = statements.count("BEGIN IMMEDIATE")
        assert 1 <= batches <= 2  # six replies, batches of at most four
        assert statements.count("PRAGMA synchronous=FULL") == batches  # every batch fsynced at its commit


def test_replies_stored_before_a_crash_are_posted_once_after_it(service: RepliesService, tmp_path: Path) -> None:
    """The hand-over stores each reply with its event and webhook deliveries in one durable transaction,
    so a replies service that dies before posting loses nothing: the next dispatcher posts every event,
    once; and a delivery repeated after a crash (same copy handed over again) fires nothing new."""
    receiver = Receiver().start()
    try:
        receiver.secret = service.outbox.add_endpoint("acme", receiver.url)["secret"]
        _register(service)
        hook, maildir, keys = _inbox(service, tmp_path, 4, "c")
        items = [Delivered("acme", "replies@acme.example", maildir, key) for key in keys]
        asyncio.run(HandOver(hook)(items))  # stored; nothing posted: the dispatcher is not running

        async def dispatch() -> int:
            return await Dispatcher(service.outbox).run_once()

        assert asyncio.run(dispatch()) == 4
        asyncio.run(HandOver(hook)(items))  # the same copies again
        assert asyncio.run(dispatch()) == 0
        assert sorted(p["data"]["reply"]["message_id"] for p in receiver.received) == [f"c{n}@c" for n in range(4)]
        assert len({p["id"] for p in receiver.received}) == 4
    finally:
        receiver.stop()


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
