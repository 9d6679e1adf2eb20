"""The whole outbound path: queue manager → OutboundAgent → a second Dovetail MX found through DNS.

5xx → bounced with a DSN to the sender; 4xx → deferred for a retry; 2xx → delivered and queued on
the receiving side.
"""

from __future__ import annotations

import asyncio
import time

from dovetail.directory import Resolver
from dovetail.intake.mx import MxBackend
from dovetail.outbound.delivery import AgentConfig, OutboundAgent
from dovetail.outbound.events import MemoryEvents
from dovetail.outbound.keys import DkimKeys
from dovetail.outbound.mx import MxResolver
from dovetail.outbound.transports import Transports
from dovetail.queue import DeliveryResult, Envelope, Queue, QueueConfig, QueuedMessage, QueueManager, QueueRecipient
from dovetail.smtp.server import SmtpServer

from .conftest import make_world
from .sink import Sink

MESSAGE = (b"From: alice@acme.example\r\nTo: gina@globex.example\r\nSubject: hi\r\n"
           b"Message-ID: <flow@acme.example>\r\n\r\nhello\r\n")


class LocalRecorder:
    """Stands in for local Maildir delivery of our own domain's mail (the DSNs)."""

    def __init__(self) -> None:
        self.got: list[bytes] = []

    async def deliver(self, message, recipients):  # noqa: ANN001, ANN201
        self.got.append(message.read_message())
        return [DeliveryResult(r, "sent", "2.0.0", "delivered to maildir") for r in recipients]


async def until(cond, limit: float = 20.0) -> None:  # noqa: ANN001
    """Wait for a condition the queue reaches (there is no event to wait on across these parts)."""
    deadline = time.monotonic() + limit
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.02)


def test_queue_to_second_dovetail_via_mx(world, dns_server, tmp_path) -> None:  # noqa: ANN001
    remote = make_world(tmp_path / "remote", f"sqlite:///{tmp_path / 'remote.db'}")
    remote_queue = Queue(tmp_path / "remote-queue")
    resolver = Resolver(remote.directory, tmp_path / "remote-mail", check_interval=0)
    queue = Queue(tmp_path / "queue")
    events = MemoryEvents()
    local = LocalRecorder()

    async def run() -> None:
        server = SmtpServer(MxBackend(resolver, remote_queue), hostname="mx.globex.example")
        await server.start(host="127.0.0.1", port=0)
        dns_server.mx("globex.example", "mx.globex.example")
        dns_server.a("mx.globex.example", "127.0.0.1")
        config = AgentConfig(hostname="out.acme.example", mx_port=server.port, connect_timeout=5, command_timeout=5)
        agent = OutboundAgent(Transports(world.engine), DkimKeys(world.engine, world.dkim_dir), config,
                              mx=MxResolver(dns_server.async_resolver(), fetch_policy=None), events=events)
        with Sink(None) as sink:
            # the MX port is one per agent, so the 4xx destination is reached through bob's relay transport
            Transports(world.engine).set("sender", "bob@acme.example", "relay", host="127.0.0.1", port=sink.port,
                                         tls="none")

            def route(address: str):  # noqa: ANN202
                return local if address.endswith("@acme.example") else agent

            manager = QueueManager(queue, route, QueueConfig(minimal_backoff=3600, hostname="out.acme.example"))
            task = asyncio.create_task(manager.run())
            await manager.started.wait()
            queue.inject(Envelope("alice@acme.example", [QueueRecipient("gina@globex.example"),
                                                         QueueRecipient("nobody@globex.example")]), MESSAGE)
            queue.inject(Envelope("bob@acme.example", [QueueRecipient("defer@slow.example")]),
                         MESSAGE.replace(b"alice@", b"bob@"))
            await until(lambda: len(remote_queue.ids("incoming")) == 1 and local.got
                        and len(queue.ids("deferred")) == 1 and not queue.ids("active"))
            manager.stop()
            await task
        await agent.close()
        await server.stop(1)

    asyncio.run(run())
    [delivered] = remote_queue.ids("incoming")
    remote_msg = QueuedMessage(delivered, remote_queue.path("incoming", delivered))
    assert [r.address for r in remote_msg.envelope.recipients] == ["gina@globex.example"]
    assert b"Message-ID: <flow@acme.example>" in remote_msg.read_message()
    [dsn] = local.got
    assert b"multipart/report" in dsn and b"report-type=delivery-status" in dsn
    assert b"nobody@globex.example" in dsn and b"5.1.1" in dsn
    [deferred] = queue.ids("deferred")
    d = QueuedMessage(deferred, queue.path("deferred", deferred))
    assert d.envelope.recipients[0].status == "pending" and d.envelope.recipients[0].dsn_code == "4.3.0"
    kinds = sorted((e.kind, e.recipient) for e in events.events)
    assert kinds == [("bounced", "nobody@globex.example"), ("deferred", "defer@slow.example"),
                     ("delivered", "gina@globex.example")]
