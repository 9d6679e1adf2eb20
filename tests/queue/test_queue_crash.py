"""Kill -9 a producer mid-burst: every message whose commit returned survives, exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from tests.queue.crash_producer import CHUNK
from tests.queue.helpers_queue import RecordingAgent, queue_files, wait_until, with_manager

from dovetail.queue import Queue, QueuedMessage

PRODUCER = Path(__file__).with_name("crash_producer.py")


@pytest.mark.parametrize("mode", ["group", "direct"])
def test_kill9_mid_burst_loses_nothing(tmp_path: Path, mode: str) -> None:
    root = tmp_path / "queue"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[2]))
    proc = subprocess.Popen(
        [sys.executable, str(PRODUCER), str(root), mode], stdout=subprocess.PIPE, env=env
    )
    assert proc.stdout is not None
    committed: list[str] = []
    try:
        while len(committed) < 60:
            line = proc.stdout.readline()
            assert line, "producer died early"
            committed.append(line.decode().strip())
    finally:
        proc.send_signal(signal.SIGKILL)
        rest = proc.stdout.read() if proc.stdout else b""
        proc.wait()
    committed += rest.decode().split()
    assert proc.returncode == -signal.SIGKILL

    q = Queue(root)
    q.recover()
    present = queue_files(root, "incoming")
    assert len(present) == len(set(present))
    assert set(committed) <= set(present)
    assert queue_files(root, "tmp") == []
    for qid in present:
        with QueuedMessage(qid, q.path("incoming", qid)) as msg:
            assert msg.read_message() == f"Subject: {qid}\r\n\r\n".encode() + CHUNK * 3

    agent = RecordingAgent()

    async def body(_mgr: object) -> None:
        await agent.wait_for(lambda: len(agent.delivered) >= len(present))

    asyncio.run(with_manager(q, agent, body))
    delivered = [d.queue_id for d in agent.delivered]
    assert sorted(delivered) == present
    assert all(d.data.startswith(f"Subject: {d.queue_id}\r\n".encode()) for d in agent.delivered)
    assert q.list_messages() == []


def test_kill9_during_delivery_redelivers_at_most_the_inflight_window(tmp_path: Path) -> None:
    from tests.queue.crash_manager import agent_for

    from dovetail.queue import Envelope, QueueConfig, QueueRecipient

    root, mail = tmp_path / "queue", tmp_path / "mail"
    q = Queue(root)
    total = 150
    for i in range(total):
        rcpts = [QueueRecipient(f"u{i % 3}@example.com"), QueueRecipient(f"v{i % 2}@example.com")]
        q.inject(Envelope("alice@example.org", rcpts), f"Subject: m{i}\r\n\r\nbody {i}\r\n".encode())
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[2]))
    script = Path(__file__).with_name("crash_manager.py")
    proc = subprocess.Popen([sys.executable, str(script), str(root), str(mail)], stdout=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    try:
        for _ in range(40):
            assert proc.stdout.readline(), "manager died early"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert len(q.ids("active")) > 0 or len(q.ids("incoming")) > 0

    agent = agent_for(mail)

    async def body(_mgr: object) -> None:
        await wait_until(lambda: not q.list_messages())

    asyncio.run(with_manager(q, agent, body, QueueConfig(scan_interval=3600)))
    counts: dict[tuple[str, str], int] = {}
    for box in mail.iterdir():
        for f in (box / "new").iterdir():
            subject = f.read_bytes().split(b"Subject: ")[1].split(b"\n")[0].decode()
            counts[(box.name, subject)] = counts.get((box.name, subject), 0) + 1
    expected = {(f"u{i % 3}", f"m{i}") for i in range(total)} | {(f"v{i % 2}", f"m{i}") for i in range(total)}
    assert set(counts) == expected
    duplicates = sum(n - 1 for n in counts.values())
    # A recipient whose Maildir file was written but whose status record had not reached the disk is
    # attempted again; the deterministic Maildir name makes that attempt find the first copy.
    assert duplicates == 0
