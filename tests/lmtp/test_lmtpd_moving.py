"""lmtpd and a tenant move: recipients of a tenant in its final sync wait (451 4.2.0), as do those of a tenant
that has just moved away from this node (the sender's routing catches up on its retry), instead of 550."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa

from dovetail.delivery.agent import MaildirConfig, MaildirDeliveryAgent
from dovetail.directory.moves import MoveStore
from dovetail.directory.nodes import NodeStore
from dovetail.intake.lmtp import LmtpBackend
from dovetail.intake.local import mailbox_targets
from dovetail.smtp.backend import SessionInfo
from dovetail.smtp.events import RcptParams

from .conftest import Node


def rcpt(backend: LmtpBackend, address: str):  # noqa: ANN201
    session = SessionInfo(client_ip="127.0.0.1", client_port=1, listener="lmtp")
    return asyncio.run(backend.check_recipient(session, address, RcptParams()))


def test_a_moving_tenant_waits_and_a_moved_one_is_deferred_not_refused(node: Node) -> None:
    engine = node.directory.engine
    nodes = NodeStore(engine)
    nodes.add("here", "mailbox", lmtp="127.0.0.1:24", transfer="127.0.0.1:8026")
    nodes.add("there", "mailbox", lmtp="127.0.0.2:24")
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE tenants SET home_node = 'here' WHERE name = 'acme'"))
    agent = MaildirDeliveryAgent(mailbox_targets(node.resolver), MaildirConfig())
    backend = LmtpBackend(node.resolver, agent, here="here")
    assert rcpt(backend, "bob@acme.example") is None

    moves = MoveStore(engine)
    move = moves.pause(moves.begin("acme", "here", "there"))
    reply = rcpt(backend, "bob@acme.example")
    assert (reply.code, reply.enhanced) == (451, "4.2.0") and "moving" in reply.text
    # the local agent (the queue's own deliveries on this node) keeps the mail queued too
    assert mailbox_targets(node.resolver)("bob@acme.example").dsn_code == "4.2.0"  # type: ignore[union-attr]

    moves.switch(move)
    reply = rcpt(backend, "bob@acme.example")
    assert (reply.code, reply.enhanced) == (451, "4.2.0") and "moved to node there" in reply.text
