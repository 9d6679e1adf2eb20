from __future__ import annotations

import asyncio
import email
import email.policy
import logging
import os
import time
from pathlib import Path

import pytest
from tests.queue.helpers_queue import RecordingAgent, envelope, message, queue_files, wait_until, with_manager

from dovetail.queue import Envelope, Queue, QueueConfig, QueuedMessage, QueueManager, QueueRecipient
from dovetail.queue.qfile import encode_record


def test_backoff_schedule() -> None:
    cfg = QueueConfig()
    assert [cfg.backoff(n) for n in range(1, 8)] == [300, 600, 1200, 2400, 4000, 4000, 4000]
    assert QueueConfig(minimal_backoff=10, maximal_backoff=50).backoff(100) == 50
    assert cfg.maximal_queue_lifetime == 5 * 86400


def test_next_attempt_is_what_a_deferral_schedules_or_none_when_too_old() -> None:
    """Delivery agents report it with a deferred outcome (the message.deferred webhook's next try)."""
    cfg = QueueConfig(minimal_backoff=60, maximal_backoff=600, maximal_queue_lifetime=3600,
                      bounce_queue_lifetime=600)
    fresh = Envelope(sender="a@acme.example", recipients=[QueueRecipient("b@x.example")], arrival=1000.0)
    assert cfg.next_attempt(fresh, 1, 1000.0) == 1060.0 and cfg.next_attempt(fresh, 3, 1100.0) == 1340.0
    assert cfg.next_attempt(fresh, 1, 1000.0 + 3600) is None  # returned to the sender instead
    bounce = Envelope(sender="", recipients=[QueueRecipient("b@x.example")], arrival=1000.0)
    assert cfg.next_attempt(bounce, 1, 1000.0 + 600) is None


def test_burst_delivered_concurrently_and_removed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    q = Queue(tmp_path / "q")
    agent = RecordingAgent(delay=0.02)
    cfg = QueueConfig(scan_interval=3600, max_concurrent_deliveries=8)

    async def body(mgr: QueueManager) -> None:
        async def produce(i: int) -> str:
            w = await q.aopen_incoming(envelope(rcpts=(f"u{i}@example.com",)))
            await w.awrite(message(f"m{i}"))
            return await w.acommit()

        ids = await asyncio.gather(*(produce(i) for i in range(120)))
        await agent.wait_for(lambda: len(agent.delivered) == 120)
        assert sorted(d.queue_id for d in agent.delivered) == sorted(ids)

    asyncio.run(with_manager(q, agent, body, cfg))
    assert 1 < agent.max_active <= 8
    assert q.list_messages() == []
    text = caplog.text
    qid = agent.delivered[0].queue_id
    assert f"{qid}: from=<alice@example.org>, size=" in text
    assert "nrcpt=1 (queue active)" in text
    assert f"{qid}: to=<{agent.delivered[0].recipient}>, relay=test, delay=" in text
    assert "dsn=2.0.0, status=sent (ok)" in text
    assert f"{qid}: removed" in text


def test_temporary_failure_defers_with_backoff(tmp_path: Path) -> None:
    q = Queue(tmp_path / "q")
    agent = RecordingAgent(outcome=lambda r, m: ("deferred", "4.2.0", "try later"))

    async def body(mgr: QueueManager) -> None:
        qid = q.inject(envelope(), message())
        await wait_until(lambda: q.locate(qid) == "deferred")

    before = time.time()
    asyncio.run(with_manager(q, agent, body))
    (entry,) = q.list_messages()
    assert entry.state == "deferred" and entry.attempts == 1 and entry.reason == "try later"
    assert entry.recipients[0].dsn_code == "4.2.0"
    assert before + 300 - 1 <= entry.next_attempt <= time.time() + 300 + 1

    # Due again: the second failure doubles the delay.
    os.utime(q.path("deferred", entry.queue_id), (time.time(), time.time()))

    async def again(mgr: QueueManager) -> None:
        await agent.wait_for(lambda: agent.calls >= 1)
        await wait_until(lambda: q.locate(entry.queue_id) == "deferred")

    agent.calls = 0
    asyncio.run(with_manager(q, agent, again))
    (entry2,) = q.list_messages()
    assert entry2.attempts == 2
    assert entry2.next_attempt - time.time() > 500


def _parse(data: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)  # type: ignore[return-value]


def test_expired_message_bounces_with_dsn(tmp_path: Path) -> None:
    q = Queue(tmp_path / "q")

    def outcome(r: QueueRecipient, m: QueuedMessage) -> tuple[str, str, str]:
        if m.envelope.sender == "":
            return ("sent", "2.0.0", "ok")
        return ("deferred", "4.4.1", "connection timed out")

    agent = RecordingAgent(outcome=outcome)
    env = envelope(rcpts=("bob@example.com", "carol@example.com"), arrival=time.time() - 6 * 86400, envid="ENV1")
    env.recipients[1].orcpt = "rfc822;carol@example.com"

    async def body(mgr: QueueManager) -> None:
        q.inject(env, message("expiring"))
        await agent.wait_for(lambda: len(agent.delivered) == 1)

    asyncio.run(with_manager(q, agent, body))
    (bounce,) = agent.delivered
    assert bounce.sender == "" and bounce.recipient == "alice@example.org"
    msg = _parse(bounce.data)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    assert msg["To"] == "alice@example.org"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "message/delivery-status", "message/rfc822"]
    blocks = parts[1].get_payload()
    assert blocks[0]["Original-Envelope-Id"] == "ENV1"
    assert blocks[0]["Reporting-MTA"].startswith("dns; ")
    per = blocks[1:]
    assert [b["Final-Recipient"] for b in per] == ["rfc822; bob@example.com", "rfc822; carol@example.com"]
    assert all(b["Action"] == "failed" and b["Status"] == "4.4.1" for b in per)
    assert per[0]["Diagnostic-Code"] == "X-Dovetail; connection timed out"
    assert per[1]["Original-Recipient"] == "rfc822;carol@example.com"
    original = parts[2].get_payload()[0]
    assert original["Subject"] == "expiring"
    assert q.list_messages() == []


def test_permanent_failure_bounce_returns_headers_for_ret_hdrs(tmp_path: Path) -> None:
    q = Queue(tmp_path / "q")

    def outcome(r: QueueRecipient, m: QueuedMessage) -> tuple[str, str, str]:
        if m.envelope.sender == "":
            return ("sent", "2.0.0", "ok")
        return ("bounced", "5.1.1", "550 5.1.1 user unknown")

    agent = RecordingAgent(outcome=outcome)

    async def body(mgr: QueueManager) -> None:
        q.inject(envelope(ret="HDRS"), message("rejected", body="SECRET BODY\r\n"))
        await agent.wait_for(lambda: len(agent.delivered) == 1)

    asyncio.run(with_manager(q, agent, body))
    msg = _parse(agent.delivered[0].data)
    parts = list(msg.iter_parts())
    assert parts[2].get_content_type() == "text/rfc822-headers"
    assert b"SECRET BODY" not in agent.delivered[0].data
    assert b"Subject: rejected" in agent.delivered[0].data
    block = parts[1].get_payload()[1]
    assert block["Status"] == "5.1.1" and block["Diagnostic-Code"] == "smtp; 550 5.1.1 user unknown"


def test_no_bounce_for_null_sender_or_notify_never(tmp_path: Path) -> None:
    q = Queue(tmp_path / "q")
    agent = RecordingAgent(outcome=lambda r, m: ("bounced", "5.1.1", "user unknown"))
    env_never = envelope()
    env_never.recipients[0].notify = ("NEVER",)

    async def body(mgr: QueueManager) -> None:
        q.inject(envelope(sender=""), message("a"))
        q.inject(env_never, message("b"))
        await agent.wait_for(lambda: agent.calls == 2)
        await wait_until(lambda: not q.list_messages())

    asyncio.run(with_manager(q, agent, body))
    assert agent.calls == 2 and agent.delivered == []


def test_notify_success_sends_delivery_report(tmp_path: Path) -> None:
    q = Queue(tmp_path / "q")
    agent = RecordingAgent()
    env = envelope()
    env.recipients[0].notify = ("SUCCESS",)

    async def body(mgr: QueueManager) -> None:
        q.inject(env, message())
        await agent.wait_for(lambda: len(agent.delivered) == 2)

    asyncio.run(with_manager(q, agent, body))
    report = next(d for d in agent.delivered if d.sender == "")
    block = _parse(report.data).get_payload()[1].get_payload()[1]
    assert block["Action"] == "delivered" and block["Status"] == "2.0.0"


def test_corrupt_file_goes_to_corrupt_and_manager_keeps_going(tmp_path: Path) -> None:
    q = Queue(tmp_path / "q")
    bad = q.inject(envelope(), message("bad"))
    q.path("incoming", bad).write_bytes(b"garbage")
    agent = RecordingAgent()

    async def body(mgr: QueueManager) -> None:
        good = q.inject(envelope(), message("good"))
        await agent.wait_for(lambda: [d.queue_id for d in agent.delivered] == [good])
        await wait_until(lambda: q.locate(bad) == "corrupt")

    asyncio.run(with_manager(q, agent, body))
    assert queue_files(q.root, "corrupt") == [bad]


def test_recovery_skips_recipients_already_delivered(tmp_path: Path) -> None:
    q = Queue(tmp_path / "q")
    qid = q.inject(envelope(rcpts=("done@example.com", "todo@example.com")), message())
    q.move(qid, "incoming", "active")
    with open(q.path("active", qid), "ab") as fh:
        fh.write(encode_record({"r": {"0": {"s": "sent", "c": "2.0.0", "w": "delivered"}}}))
    agent = RecordingAgent()

    async def body(mgr: QueueManager) -> None:
        await agent.wait_for(lambda: len(agent.delivered) == 1)

    asyncio.run(with_manager(q, agent, body))
    assert [d.recipient for d in agent.delivered] == ["todo@example.com"]
    assert q.list_messages() == []


def test_cross_process_wakeup_through_fifo(tmp_path: Path) -> None:
    q = Queue(tmp_path / "q")
    other = Queue(tmp_path / "q")  # no in-process listener: wakes the manager through public/qmgr
    agent = RecordingAgent()

    async def body(mgr: QueueManager) -> None:
        start = time.monotonic()
        qid = await asyncio.to_thread(other.inject, envelope(), message())
        await agent.wait_for(lambda: len(agent.delivered) == 1, limit=5)
        assert agent.delivered[0].queue_id == qid
        assert time.monotonic() - start < 5

    asyncio.run(with_manager(q, agent, body, QueueConfig(scan_interval=3600)))


def test_hold_release_and_flush_while_running(tmp_path: Path) -> None:
    q = Queue(tmp_path / "q")
    fail = {"on": True}
    agent = RecordingAgent(
        outcome=lambda r, m: ("deferred", "4.0.0", "later") if fail["on"] else ("sent", "2.0.0", "ok")
    )
    held = q.inject(envelope(), message("held"))
    assert q.hold(held) == 1

    async def body(mgr: QueueManager) -> None:
        deferred = q.inject(envelope(), message("deferred"))
        await wait_until(lambda: q.locate(deferred) == "deferred")
        assert agent.delivered == []
        fail["on"] = False
        assert q.flush() == 1
        await agent.wait_for(lambda: len(agent.delivered) == 1)
        assert agent.delivered[0].queue_id == deferred
        assert q.locate(held) == "hold"
        assert q.release(held) == 1
        await agent.wait_for(lambda: len(agent.delivered) == 2)
        assert agent.delivered[1].queue_id == held

    asyncio.run(with_manager(q, agent, body))
    assert q.list_messages() == []


def test_only_one_manager_per_queue(tmp_path: Path) -> None:
    q = Queue(tmp_path / "q")

    async def body(mgr: QueueManager) -> None:
        second = QueueManager(q, lambda a: RecordingAgent())
        with pytest.raises(RuntimeError):
            await second.run()

    asyncio.run(with_manager(q, RecordingAgent(), body))


def test_unknown_transport_defers(tmp_path: Path) -> None:
    q = Queue(tmp_path / "q")

    async def main() -> None:
        mgr = QueueManager(q, {"smtp": RecordingAgent()}, QueueConfig(scan_interval=3600),
                           transport_for=lambda a: "nowhere")
        task = asyncio.create_task(mgr.run())
        qid = q.inject(envelope(), message())
        await wait_until(lambda: q.locate(qid) == "deferred")
        mgr.stop()
        await task

    asyncio.run(main())
    (entry,) = q.list_messages()
    assert entry.recipients[0].dsn_code == "4.3.5"


def test_delay_warning_sent_once_when_configured(tmp_path: Path) -> None:
    q = Queue(tmp_path / "q")

    def outcome(r: QueueRecipient, m: QueuedMessage) -> tuple[str, str, str]:
        return ("sent", "2.0.0", "ok") if m.envelope.sender == "" else ("deferred", "4.4.1", "no route")

    agent = RecordingAgent(outcome=outcome)
    cfg = QueueConfig(scan_interval=3600, delay_warning_time=3600)

    async def body(mgr: QueueManager) -> None:
        qid = q.inject(envelope(arrival=time.time() - 7200), message())
        await agent.wait_for(lambda: len(agent.delivered) == 1)
        await wait_until(lambda: q.locate(qid) == "deferred")
        os.utime(q.path("deferred", qid), (time.time(), time.time()))
        q.flush()
        await agent.wait_for(lambda: agent.calls >= 3)
        await wait_until(lambda: q.locate(qid) == "deferred")

    asyncio.run(with_manager(q, agent, body, cfg))
    (warning,) = agent.delivered
    block = _parse(warning.data).get_payload()[1].get_payload()[1]
    assert block["Action"] == "delayed" and block["Status"] == "4.4.1"
    assert "Will-Retry-Until" in block
