"""Submission and the suppression list: the tenant's policy (reject at RCPT, or drop), the same lookup as
the send API (the replies engine's list, real SQL), and a ``suppressed`` event per left-out recipient.

Real smtplib with AUTH over STARTTLS against the submission listener; the events go to an in-test sink.
"""

from __future__ import annotations

import os
import smtplib
from collections.abc import Iterator

import pytest

from dovetail.directory import DirectoryError
from dovetail.outbound.events import MemoryEvents
from dovetail.outbound.submission import SubmissionBackend
from dovetail.queue import Queue
from dovetail.replies.outbound_bridge import OutboundBridge
from dovetail.replies.service import RepliesService

from .sink import Certs
from .test_submission import Running, client, queued

MSG = (b"From: Alice <alice@acme.example>\r\nTo: a@example.org, gone@example.org\r\nSubject: t\r\n"
       b"Message-ID: <m1@acme.example>\r\n\r\nhello\r\n")


@pytest.fixture
def suppressing(world, tmp_path) -> Iterator[tuple[Running, Queue, Certs, MemoryEvents]]:  # noqa: ANN001
    """A submission listener whose suppression list is the replies engine's: gone@example.org is on
    acme's list (hard bounce), unsub@example.org too (unsubscribed), nobody on globex's."""
    service = RepliesService(world.engine, os.urandom(32))
    service.queries.suppress("acme", "gone@example.org", "hard_bounce")
    service.queries.suppress("acme", "Unsub@Example.org", "unsubscribe")
    events = MemoryEvents()
    certs = Certs()
    queue = Queue(tmp_path / "queue")
    backend = SubmissionBackend(world.engine, queue, suppressions=OutboundBridge(service), events=events)
    srv = Running(backend, certs.server_context(), implicit=False)
    yield srv, queue, certs, events
    srv.stop()


def test_reject_policy_refuses_only_the_suppressed_recipient(world, suppressing) -> None:  # noqa: ANN001
    srv, queue, certs, events = suppressing
    assert world.directory.tenant_get("acme")["suppressed_recipients"] == "reject"  # the default
    with client(srv, certs) as c:
        c.login("alice@acme.example", "alice-pw")
        refused = c.sendmail("alice@acme.example", ["a@example.org", "GONE@example.org", "unsub@example.org"], MSG)
    assert refused == {
        "GONE@example.org": (550, b"5.7.1 <GONE@example.org>: recipient is on the suppression list (hard_bounce)"),
        "unsub@example.org": (550, b"5.7.1 <unsub@example.org>: recipient is on the suppression list "
                                   b"(unsubscribe)"),
    }
    [message] = queued(queue)
    assert [r.address for r in message.envelope.recipients] == ["a@example.org"]
    assert [(e.kind, e.queue_id, e.recipient, e.sender, e.dsn, e.reason, e.tenant) for e in events.events] == [
        ("suppressed", "", "GONE@example.org", "alice@acme.example", "5.7.1", "hard_bounce", "acme"),
        ("suppressed", "", "unsub@example.org", "alice@acme.example", "5.7.1", "unsubscribe", "acme"),
    ]


def test_drop_policy_accepts_and_leaves_the_suppressed_recipient_out(world, suppressing) -> None:  # noqa: ANN001
    srv, queue, certs, events = suppressing
    world.directory.tenant_set("acme", suppressed_recipients="drop")
    with client(srv, certs) as c:
        c.login("alice@acme.example", "alice-pw")
        assert c.sendmail("alice@acme.example", ["a@example.org", "gone@example.org"], MSG) == {}
    [message] = queued(queue)
    assert [r.address for r in message.envelope.recipients] == ["a@example.org"]
    assert [(e.kind, e.queue_id, e.recipient, e.message_id, e.dsn, e.reason, e.tenant) for e in events.events] == [
        ("suppressed", message.queue_id, "gone@example.org", "<m1@acme.example>", "5.7.1", "hard_bounce", "acme"),
    ]


def test_drop_policy_with_every_recipient_suppressed_accepts_and_discards(world, suppressing) -> None:  # noqa: ANN001
    srv, queue, certs, events = suppressing
    world.directory.tenant_set("acme", suppressed_recipients="drop")
    with client(srv, certs) as c:
        c.login("alice@acme.example", "alice-pw")
        c.mail("alice@acme.example")
        assert c.rcpt("gone@example.org")[0] == 250
        assert c.rcpt("unsub@example.org")[0] == 250
        code, text = c.data(MSG)
        assert code == 250 and b"accepted and discarded" in text
        # the tenant walls still stand for a message that is discarded
        c.mail("alice@acme.example")
        c.rcpt("gone@example.org")
        code, _ = c.data(MSG.replace(b"alice@acme.example", b"ceo@globex.example"))
        assert code == 553
    assert queued(queue) == []
    assert sorted((e.recipient, e.queue_id, e.reason) for e in events.events) == [
        ("gone@example.org", "", "hard_bounce"), ("unsub@example.org", "", "unsubscribe")]


def test_lists_and_policies_are_per_tenant(world, suppressing) -> None:  # noqa: ANN001
    """globex has nobody on its list: acme's suppressions do not reach across the wall."""
    srv, queue, certs, events = suppressing
    with client(srv, certs) as c:
        c.login("gina@globex.example", "gina-pw")
        assert c.sendmail("gina@globex.example", ["gone@example.org"],
                          MSG.replace(b"alice@acme.example", b"gina@globex.example")) == {}
    [message] = queued(queue)
    assert [r.address for r in message.envelope.recipients] == ["gone@example.org"]
    assert events.events == []


def test_a_policy_must_be_reject_or_drop(world) -> None:  # noqa: ANN001
    with pytest.raises(DirectoryError, match="not one of reject, drop"):
        world.directory.tenant_set("acme", display_name="Changed", suppressed_recipients="bounce")
    row = world.directory.tenant_get("acme")
    assert (row["suppressed_recipients"], row["display_name"]) == ("reject", "acme")  # nothing half-saved


def test_without_a_suppression_list_submission_is_unchanged(world, tmp_path) -> None:  # noqa: ANN001
    certs = Certs()
    queue = Queue(tmp_path / "queue")
    srv = Running(SubmissionBackend(world.engine, queue), certs.server_context(), implicit=False)
    try:
        with client(srv, certs) as c:
            c.login("alice@acme.example", "alice-pw")
            assert c.sendmail("alice@acme.example", ["gone@example.org"], MSG) == {}
    finally:
        srv.stop()
    assert len(queued(queue)) == 1


def test_send_api_and_submission_share_the_lookup(world) -> None:  # noqa: ANN001
    bridge = OutboundBridge(RepliesService(world.engine, os.urandom(32)))
    bridge.service.queries.suppress("acme", "gone@example.org", "complaint")
    asked = ["Gone@Example.org", "a@example.org"]
    assert bridge.suppressed("acme", asked) == {"Gone@Example.org"}
    assert bridge.suppression_reasons("acme", asked) == {"Gone@Example.org": "complaint"}
    assert bridge.suppression_reasons("globex", asked) == {} and bridge.suppression_reasons("nobody", asked) == {}


def test_smtplib_refusal_of_every_recipient_under_reject(suppressing) -> None:  # noqa: ANN001
    srv, queue, certs, events = suppressing
    with client(srv, certs) as c:
        c.login("alice@acme.example", "alice-pw")
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            c.sendmail("alice@acme.example", ["gone@example.org"], MSG)
    assert queued(queue) == []
    assert [e.recipient for e in events.events] == ["gone@example.org"]
