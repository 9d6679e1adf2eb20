"""Several queue managers on one queue, each delivering its shard of the queue ids."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.queue.helpers_queue import RecordingAgent, envelope, message, queue_files, wait_until

from dovetail.queue import Queue, QueueConfig, QueueManager, Shard
from dovetail.queue.qfile import QueuedMessage

CFG = QueueConfig(scan_interval=3600)  # nothing but wake-ups (and the start) makes a manager look


@contextlib.asynccontextmanager
async def managers(root: Path, agents: list[RecordingAgent], shards: list[Shard],
                   config: QueueConfig = CFG) -> AsyncIterator[list[QueueManager]]:
    """One manager per shard, each with its own ``Queue`` object, as separate processes have."""
    mgrs = [QueueManager(Queue(root), lambda _a, agent=agent: agent, config, shard=shard)  # type: ignore[misc]
            for agent, shard in zip(agents, shards, strict=True)]
    tasks = [asyncio.create_task(m.run()) for m in mgrs]
    try:
        for m, t in zip(mgrs, tasks, strict=True):
            started = asyncio.create_task(m.started.wait())
            done, _ = await asyncio.wait({t, started}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
            started.cancel()
            if t in done:
                t.result()
            assert m.started.is_set()
        yield mgrs
    finally:
        for m in mgrs:
            m.stop()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)


def test_shards_split_the_ids_between_them() -> None:
    halves = [Shard(0, 2), Shard(1, 2)]
    ids = [f"{i:016d}" for i in range(1000)]
    for qid in ids:
        assert sum(s.owns(qid) for s in halves) == 1
    assert 400 < sum(halves[0].owns(q) for q in ids) < 600
    assert all(Shard().owns(q) for q in ids)
    with pytest.raises(ValueError):
        Shard(2, 2)


def test_two_managers_deliver_each_message_once_woken_from_another_process(tmp_path: Path) -> None:
    root = tmp_path / "q"
    producer = Queue(root)  # no manager in it: its wake-ups go through the FIFOs, one per manager
    agents = [RecordingAgent(), RecordingAgent()]
    shards = [Shard(0, 2), Shard(1, 2)]

    async def body() -> None:
        async with managers(root, agents, shards):
            start = time.monotonic()
            ids = [await asyncio.to_thread(producer.inject, envelope(rcpts=(f"u{i}@example.com",)), message(f"m{i}"))
                   for i in range(60)]
            for agent, shard in zip(agents, shards, strict=True):
                await agent.wait_for(lambda a=agent, s=shard: len(a.delivered) == sum(s.owns(q) for q in ids))
            assert time.monotonic() - start < 10  # woken, not found by the hourly scan
            for agent, shard in zip(agents, shards, strict=True):
                assert agent.delivered and all(shard.owns(d.queue_id) for d in agent.delivered)
            delivered = sorted(d.queue_id for a in agents for d in a.delivered)
            assert delivered == sorted(ids)  # every message once

    asyncio.run(body())
    assert producer.list_messages() == []


def test_a_manager_whose_shard_overlaps_a_running_one_cannot_start(tmp_path: Path) -> None:
    root = tmp_path / "q"

    async def body() -> None:
        async with managers(root, [RecordingAgent()], [Shard(0, 2)]):
            for overlapping in (Shard(0, 2), Shard(0, 3), Shard()):
                with pytest.raises(RuntimeError, match="a queue manager already runs"):
                    await QueueManager(Queue(root), lambda _a: RecordingAgent(), CFG, shard=overlapping).run()
            # The other half is free.
            async with managers(root, [RecordingAgent()], [Shard(1, 2)]):
                pass

    asyncio.run(body())


def test_recovery_after_a_crash_takes_only_the_managers_own_shard(tmp_path: Path) -> None:
    """A manager restarted alone must not pull back what its sibling is delivering right now."""
    root = tmp_path / "q"
    q = Queue(root)
    ids = [q.inject(envelope(), message(f"m{i}")) for i in range(20)]
    for qid in ids:  # as a crash of both managers left them
        assert q.move(qid, "incoming", "active")
    mine, theirs = Shard(0, 2), Shard(1, 2)
    agent = RecordingAgent()

    async def body() -> None:
        async with managers(root, [agent], [mine]):
            await agent.wait_for(lambda: len(agent.delivered) == sum(mine.owns(q) for q in ids))

    asyncio.run(body())
    assert sorted(d.queue_id for d in agent.delivered) == sorted(q for q in ids if mine.owns(q))
    assert queue_files(root, "active") == sorted(q for q in ids if theirs.owns(q))


def test_flush_and_bounces_reach_every_shard(tmp_path: Path) -> None:
    """``postqueue -f`` wakes all managers for their deferred mail; a bounce one manager writes may
    belong to the other, which is woken for it."""
    root = tmp_path / "q"
    q = Queue(root)
    fail = {"on": True}

    def outcome(rcpt: object, msg: QueuedMessage) -> tuple[str, str, str]:
        if msg.envelope.sender == "" or not fail["on"]:
            return "sent", "2.0.0", "ok"
        return ("bounced", "5.1.1", "no such user") if "bounce" in msg.envelope.recipients[0].address \
            else ("deferred", "4.0.0", "later")

    agents = [RecordingAgent(outcome=outcome), RecordingAgent(outcome=outcome)]
    shards = [Shard(0, 2), Shard(1, 2)]

    async def body() -> None:
        async with managers(root, agents, shards):
            later = [await asyncio.to_thread(q.inject, envelope(rcpts=(f"u{i}@example.com",)), message(f"m{i}"))
                     for i in range(16)]
            assert {s.index for s in shards for qid in later if s.owns(qid)} == {0, 1}
            await wait_until(lambda: sorted(queue_files(root, "deferred")) == sorted(later))
            fail["on"] = False
            assert await asyncio.to_thread(Queue(root).flush) == 16
            # deferred/ empties when the files move to active/, before their deliveries are recorded
            await wait_until(lambda: sorted(d.queue_id for a in agents for d in a.delivered) == sorted(later))
            assert queue_files(root, "deferred") == []
            # Bounces: sent back to alice@example.org, each DSN a new message of either shard.
            fail["on"] = True
            bounced = [await asyncio.to_thread(q.inject, envelope(rcpts=(f"bounce{i}@example.com",)),
                                               message(f"b{i}")) for i in range(16)]
            await wait_until(lambda: sum(1 for a in agents for d in a.delivered if d.sender == "") == len(bounced))

    asyncio.run(body())
    assert q.list_messages() == []
