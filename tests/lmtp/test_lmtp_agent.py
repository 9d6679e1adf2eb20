"""The queue's LMTP agent against a real lmtpd: per-recipient outcomes, and mail that waits for a node."""

from __future__ import annotations

import asyncio
import socket

from dovetail.delivery.lmtp import LmtpDeliveryAgent, LmtpPool, Nexthop, wire_content
from dovetail.queue import Envelope, QueueConfig, QueuedMessage, QueueManager, QueueRecipient
from dovetail.storage import open_storage

from ..queue.helpers_queue import wait_until
from .conftest import Node

MESSAGE = b"From: alice@ext.example\r\nSubject: queued\r\n\r\n.leading dot\r\nbody\r\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _enqueue(node: Node, rcpts: tuple[str, ...]) -> str:
    writer = node.queue.open_incoming(Envelope(sender="alice@ext.example",
                                               recipients=[QueueRecipient(r) for r in rcpts]))
    writer.write(MESSAGE)
    return writer.commit()


def test_wire_content_stuffs_dots_and_ends_lines_with_crlf() -> None:
    assert wire_content(b"a\n.b\r\n..c") == b"a\r\n..b\r\n...c\r\n.\r\n"


def test_each_recipient_is_delivered_deferred_or_bounced_on_its_own(node: Node) -> None:
    open_storage(node.maildir("full@acme.example"), create=True).deliver([b"Subject: f\r\n\r\n" + b"x" * 2000])
    qid = _enqueue(node, ("bob@acme.example", "nobody@acme.example", "full@acme.example"))

    async def scenario() -> list:
        server = node.server()
        await server.start(host="127.0.0.1", port=0)
        try:
            agent = LmtpDeliveryAgent(lambda a: Nexthop("127.0.0.1", server.port), "mx.test")
            with QueuedMessage(qid, node.queue.path("incoming", qid)) as msg:
                return await agent.deliver(msg, msg.envelope.recipients)
        finally:
            await server.stop(1)

    bob, nobody, full = asyncio.run(scenario())
    assert (bob.status, bob.dsn_code) == ("sent", "2.0.0")
    assert bob.relay and bob.relay.startswith("lmtp:127.0.0.1:")
    assert (nobody.status, nobody.dsn_code) == ("bounced", "5.1.1")
    assert "in reply to RCPT TO" in nobody.reason
    assert (full.status, full.dsn_code) == ("deferred", "4.2.2")
    (stored,) = node.messages("bob@acme.example")
    assert b"\n.leading dot\n" in stored.replace(b"\r\n", b"\n")  # dot-stuffed on the wire, unstuffed there


def test_unreachable_node_defers_every_recipient(node: Node) -> None:
    qid = _enqueue(node, ("bob@acme.example", "carol@acme.example"))
    agent = LmtpDeliveryAgent(lambda a: Nexthop("127.0.0.1", _free_port()), "mx.test", connect_timeout=5)
    with QueuedMessage(qid, node.queue.path("incoming", qid)) as msg:
        results = asyncio.run(agent.deliver(msg, msg.envelope.recipients))
    assert [(r.status, r.dsn_code) for r in results] == [("deferred", "4.4.1")] * 2
    assert "connect to lmtp:127.0.0.1:" in results[0].reason


def test_mail_waits_in_the_queue_while_the_node_is_down_and_arrives_once_when_it_is_back(node: Node) -> None:
    port = _free_port()
    _enqueue(node, ("bob@acme.example",))
    _enqueue(node, ("bob@acme.example", "carol@acme.example"))

    async def scenario() -> None:
        agent = LmtpDeliveryAgent(lambda a: Nexthop("127.0.0.1", port), "mx.test", connect_timeout=5)
        manager = QueueManager(node.queue, {"lmtp": agent}, QueueConfig(minimal_backoff=0.2, maximal_backoff=0.4,
                                                                        scan_interval=0.2),
                               transport_for=lambda a: "lmtp")
        task = asyncio.create_task(manager.run())
        try:
            await manager.started.wait()
            await wait_until(lambda: len(node.queue.ids("deferred")) == 2, 30)  # tried, deferred: node down
            assert node.messages("bob@acme.example") == []
            server = node.server()
            await server.start(host="127.0.0.1", port=port)
            try:
                await wait_until(lambda: not any(node.queue.ids(s) for s in ("incoming", "active", "deferred")),
                                 30)
            finally:
                await server.stop(1)
        finally:
            manager.stop()
            await asyncio.wait_for(task, 30)

    asyncio.run(asyncio.wait_for(scenario(), 60))
    assert len(node.messages("bob@acme.example")) == 2  # one copy of each message, none lost, none twice
    assert len(node.messages("carol@acme.example")) == 1


def test_delivery_over_a_unix_socket(node: Node) -> None:
    from dovetail.master.supervisor import bind_unix_socket

    path = str(node.root / "lmtp.sock")
    qid = _enqueue(node, ("carol@acme.example",))

    async def scenario() -> list:
        server = node.server()
        await server.start(sock=bind_unix_socket(path))
        try:
            agent = LmtpDeliveryAgent(lambda a: Nexthop(path=path), "mx.test")
            with QueuedMessage(qid, node.queue.path("incoming", qid)) as msg:
                return await agent.deliver(msg, msg.envelope.recipients)
        finally:
            await server.stop(1)

    (result,) = asyncio.run(scenario())
    assert (result.status, result.relay) == ("sent", f"lmtp:unix:{path}")
    assert len(node.messages("carol@acme.example")) == 1


async def _deliver(agent: LmtpDeliveryAgent, node: Node, rcpts: tuple[str, ...]) -> list:
    qid = _enqueue(node, rcpts)
    with QueuedMessage(qid, node.queue.path("incoming", qid)) as msg:
        return await agent.deliver(msg, msg.envelope.recipients)


def test_one_connection_carries_many_transactions_even_after_one_that_failed(node: Node) -> None:
    async def scenario() -> tuple[list, int, int]:
        server = node.server()
        await server.start(host="127.0.0.1", port=0)
        nexthop = Nexthop("127.0.0.1", server.port)
        agent = LmtpDeliveryAgent(lambda a: nexthop, "mx.test", pool=LmtpPool("mx.test", idle_timeout=0.2))
        try:
            outcomes = [await _deliver(agent, node, ("bob@acme.example",)),
                        await _deliver(agent, node, ("nobody@acme.example",)),  # every RCPT refused: DATA 503
                        await _deliver(agent, node, ("bob@acme.example", "carol@acme.example"))]
            kept = agent.pool.idle(nexthop)
            await wait_until(lambda: agent.pool.idle(nexthop) == 0, 10)  # closed once idle too long
            return outcomes, kept, server.connections_total
        finally:
            agent.close()
            await server.stop(1)

    ((first,), (refused,), both), kept, connections = asyncio.run(scenario())
    assert first.status == "sent" and refused.status == "bounced"
    assert [r.status for r in both] == ["sent", "sent"]  # RSET cleared the refused transaction's MAIL
    assert (kept, connections) == (1, 1)
    assert len(node.messages("bob@acme.example")) == 2 and len(node.messages("carol@acme.example")) == 1


def test_a_connection_the_node_closed_while_idle_is_replaced_without_a_lost_or_second_copy(node: Node) -> None:
    port = _free_port()

    async def scenario() -> tuple[list, list, int]:
        agent = LmtpDeliveryAgent(lambda a: Nexthop("127.0.0.1", port), "mx.test")
        server = node.server()
        await server.start(host="127.0.0.1", port=port)
        first = await _deliver(agent, node, ("bob@acme.example",))
        await server.stop(1)  # the node restarts: our idle connection gets 421 and is closed
        server = node.server()
        await server.start(host="127.0.0.1", port=port)
        try:
            second = await _deliver(agent, node, ("bob@acme.example",))
            return first, second, agent.pool.opened
        finally:
            agent.close()
            await server.stop(1)

    first, second, opened = asyncio.run(scenario())
    assert [r.status for r in first + second] == ["sent", "sent"]
    assert opened == 2
    assert len(node.messages("bob@acme.example")) == 2


def test_transactions_to_one_node_run_concurrently_within_the_bound(node: Node) -> None:
    async def scenario() -> tuple[list, int, int]:
        server = node.server()
        await server.start(host="127.0.0.1", port=0)
        agent = LmtpDeliveryAgent(lambda a: Nexthop("127.0.0.1", server.port), "mx.test",
                                  pool=LmtpPool("mx.test", per_destination=2))
        try:
            results = await asyncio.gather(*(_deliver(agent, node, ("carol@acme.example",)) for _ in range(8)))
            return results, agent.pool.opened, server.connections_total
        finally:
            agent.close()
            await server.stop(1)

    results, opened, connections = asyncio.run(scenario())
    assert [r.status for (r,) in results] == ["sent"] * 8
    assert opened == connections == 2
    assert len(node.messages("carol@acme.example")) == 8


def test_a_reused_connection_whose_peer_went_silent_is_replaced_within_the_connect_timeout(node: Node) -> None:
    """A node gone without closing (no FIN: a partition, a frozen host) must not hold mail for the whole
    command timeout: the RSET that starts a reused transaction waits only the connect timeout."""
    connections: list[asyncio.StreamWriter] = []
    served = [0]

    async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        first = len(connections) == 1
        writer.write(b"220 peer LMTP\r\n")
        while line := await reader.readline():
            if first and served[0] >= 1:
                await asyncio.Event().wait()  # silent from now on, and never closes
            verb = line[:4].upper()
            if verb == b"LHLO":
                writer.write(b"250-peer\r\n250 PIPELINING\r\n")
            elif verb == b"DATA":
                writer.write(b"354 go\r\n")
                while (await reader.readline()) != b".\r\n":
                    pass
                served[0] += 1
                writer.write(b"250 2.0.0 saved\r\n")
            else:
                writer.write(b"250 2.0.0 ok\r\n")

    async def scenario() -> tuple[list, float, int]:
        server = await asyncio.start_server(peer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        agent = LmtpDeliveryAgent(lambda a: Nexthop("127.0.0.1", port), "mx.test", timeout=60,
                                  pool=LmtpPool("mx.test", connect_timeout=0.5))
        try:
            first = await _deliver(agent, node, ("bob@acme.example",))
            started = asyncio.get_running_loop().time()
            second = await _deliver(agent, node, ("bob@acme.example",))
            return first + second, asyncio.get_running_loop().time() - started, len(connections)
        finally:
            agent.close()
            for w in connections:
                w.close()
            server.close()

    results, took, opened = asyncio.run(scenario())
    assert [r.status for r in results] == ["sent", "sent"] and served == [2]
    assert opened == 2 and took < 20  # replaced after 0.5 s, not the 60 s command timeout
