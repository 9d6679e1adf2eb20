"""qmgr's transport lookup: a cache miss is a database query, so it runs in a thread, never on the loop."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from tests.queue.helpers_queue import RecordingAgent, envelope, message

from dovetail.db import make_engine, migrate
from dovetail.directory import Directory, Resolver
from dovetail.intake.local import transport_chooser
from dovetail.queue import Queue, QueueConfig, QueueManager


class WhereResolved(Resolver):
    """The real resolver, noting for each database-backed lookup whether it ran on an event loop."""

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.lookups: list[tuple[str, bool, int]] = []

    def resolve(self, address: str):  # noqa: ANN201
        try:
            asyncio.get_running_loop()
            on_loop = True
        except RuntimeError:
            on_loop = False
        self.lookups.append((address, on_loop, threading.get_ident()))
        return super().resolve(address)


def resolver(tmp_path: Path) -> WhereResolved:
    engine = make_engine(f"sqlite:///{tmp_path / 'dovetail.db'}")
    migrate(engine)
    d = Directory(engine)
    d.tenant_add("acme")
    d.domain_add("acme.example", "acme")
    d.mailbox_add("bob@acme.example", None)
    return WhereResolved(d, tmp_path / "mail", check_interval=60)


def test_a_miss_resolves_in_a_thread_and_a_hit_stays_inline(tmp_path: Path) -> None:
    res = resolver(tmp_path)
    choose = transport_chooser(res)

    async def main() -> list[str]:
        return [await choose("bob@acme.example"), await choose("carl@client.example"),
                await choose("Bob@ACME.example")]

    assert asyncio.run(main()) == ["virtual", "smtp", "virtual"]
    assert [a for a, _, _ in res.lookups] == ["bob@acme.example", "carl@client.example"]  # the third was cached
    assert not any(on_loop for _, on_loop, _ in res.lookups)
    assert threading.get_ident() not in {ident for _, _, ident in res.lookups}


def test_the_queue_manager_routes_by_an_async_transport_lookup(tmp_path: Path) -> None:
    res = resolver(tmp_path)
    q = Queue(tmp_path / "q")
    local, remote = RecordingAgent(), RecordingAgent()

    async def main() -> None:
        mgr = QueueManager(q, {"virtual": local, "smtp": remote}, QueueConfig(scan_interval=3600),
                           transport_for=transport_chooser(res))
        task = asyncio.create_task(mgr.run())
        q.inject(envelope(rcpts=("bob@acme.example", "carl@client.example")), message())
        await local.wait_for(lambda: len(local.delivered) == 1)
        await remote.wait_for(lambda: len(remote.delivered) == 1)
        mgr.stop()
        await task

    asyncio.run(main())
    assert [d.recipient for d in local.delivered] == ["bob@acme.example"]
    assert [d.recipient for d in remote.delivered] == ["carl@client.example"]
    assert res.lookups and not any(on_loop for _, on_loop, _ in res.lookups)
