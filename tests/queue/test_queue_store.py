from __future__ import annotations

import asyncio
import os
import struct
import threading
import time
from pathlib import Path

import pytest
from tests.queue.helpers_queue import envelope, message, queue_files

from dovetail.queue import CorruptQueueFile, Envelope, Queue, QueuedMessage, QueueRecipient, is_queue_id
from dovetail.queue.ids import new_queue_id, queue_id_time
from dovetail.queue.qfile import HEADER


def test_queue_ids_are_unique_sortable_and_timed() -> None:
    ids = [new_queue_id() for _ in range(5000)]
    assert len(set(ids)) == 5000
    assert ids == sorted(ids)
    assert all(is_queue_id(i) and len(i) == 16 for i in ids)
    assert abs(queue_id_time(ids[0]) - time.time()) < 5
    assert not is_queue_id("../../etc/passwd")


def test_queue_ids_unique_across_threads() -> None:
    out: list[list[str]] = [[] for _ in range(4)]

    def make(i: int) -> None:
        out[i] = [new_queue_id() for _ in range(2000)]

    threads = [threading.Thread(target=make, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({q for part in out for q in part}) == 8000


def test_commit_stores_envelope_and_streams_message(tmp_path: Path) -> None:
    q = Queue(tmp_path / "queue")
    env = envelope(
        rcpts=("bob@example.com", "carol@example.com"),
        ret="HDRS",
        envid="E1",
        client_address="192.0.2.1",
        helo="mx.example.org",
        tls="TLSv1.3",
        auth_user="alice",
    )
    env.recipients[0].notify = ("SUCCESS", "FAILURE")
    env.recipients[1].orcpt = "rfc822;carol@example.com"
    writer = q.open_incoming(env)
    qid = writer.queue_id
    assert is_queue_id(qid)
    body = os.urandom(300_000)
    for i in range(0, len(body), 65536):
        writer.write(body[i : i + 65536])
    assert queue_files(q.root, "incoming") == []
    assert writer.commit() == qid
    assert queue_files(q.root, "incoming") == [qid]
    assert queue_files(q.root, "tmp") == []
    with QueuedMessage(qid, q.path("incoming", qid)) as msg:
        assert msg.size == len(body)
        got = msg.envelope
        assert (got.sender, got.ret, got.envid, got.client_address, got.helo, got.tls, got.auth_user) == (
            "alice@example.org", "HDRS", "E1", "192.0.2.1", "mx.example.org", "TLSv1.3", "alice",
        )
        assert got.recipients[0].notify == ("SUCCESS", "FAILURE")
        assert got.recipients[1].orcpt == "rfc822;carol@example.com"
        with msg.open() as fh:
            assert fh.read(10) == body[:10]
            fh.seek(0)
            assert fh.read() == body


def test_abort_leaves_nothing(tmp_path: Path) -> None:
    q = Queue(tmp_path / "q")
    w = q.open_incoming(envelope())
    w.write(b"x" * 1000)
    w.abort()
    assert queue_files(q.root, "tmp") == [] and queue_files(q.root, "incoming") == []
    with pytest.raises(ValueError):
        w.write(b"more")


def test_envelope_validation() -> None:
    with pytest.raises(ValueError):
        Envelope("a@b", [QueueRecipient("c@d")], ret="BOGUS")
    with pytest.raises(ValueError):
        Envelope("a@b", [QueueRecipient("c@d", notify=("NEVER", "SUCCESS"))])


@pytest.mark.parametrize("group", [True, False])
def test_concurrent_commits(tmp_path: Path, group: bool) -> None:
    q = Queue(tmp_path / "q", group_commit=group)
    committed: list[str] = []
    lock = threading.Lock()

    def producer() -> None:
        for _ in range(25):
            qid = q.inject(envelope(), message())
            with lock:
                committed.append(qid)

    threads = [threading.Thread(target=producer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(committed) == queue_files(q.root, "incoming")
    assert len(committed) == 200
    fsyncs = q._incoming_sync.fsyncs
    if group:
        assert 1 <= fsyncs <= 200
    else:
        assert fsyncs == 200


def test_async_writer(tmp_path: Path) -> None:
    q = Queue(tmp_path / "q")

    async def main() -> list[str]:
        async def one(i: int) -> str:
            w = await q.aopen_incoming(envelope())
            await w.awrite(message(f"m{i}"))
            return await w.acommit()

        return await asyncio.gather(*(one(i) for i in range(50)))

    ids = asyncio.run(main())
    assert sorted(ids) == queue_files(q.root, "incoming")


def test_corrupt_files_are_detected(tmp_path: Path) -> None:
    q = Queue(tmp_path / "q")
    qid = q.inject(envelope(), message())
    path = q.path("incoming", qid)
    data = path.read_bytes()
    cases = {
        "magic": b"XXXXXXXX" + data[8:],
        "truncated": data[:-5],
        "uncommitted": data[:16] + struct.pack(">Q", (1 << 64) - 1) + data[24:],
        "envelope": data[: HEADER.size + 3] + b"#" + data[HEADER.size + 4 :],
        "short": data[:10],
    }
    for name, bad in cases.items():
        path.write_bytes(bad)
        with pytest.raises(CorruptQueueFile):
            QueuedMessage(qid, path).close()
            pytest.fail(f"case {name} was accepted")


def test_status_log_survives_torn_record(tmp_path: Path) -> None:
    q = Queue(tmp_path / "q")
    qid = q.inject(envelope(rcpts=("a@x", "b@x")), message())
    path = q.path("incoming", qid)
    with QueuedMessage(qid, path) as msg:
        msg.append_update({"r": {"0": {"s": "sent", "c": "2.0.0", "w": "ok"}}})
    with open(path, "ab") as fh:
        fh.write(b"\x00\x00\x00\x40\x12\x34")  # a record cut short by a crash
    with QueuedMessage(qid, path) as msg:
        assert [r.status for r in msg.envelope.recipients] == ["sent", "pending"]
        msg.append_update({"r": {"1": {"s": "bounced", "c": "5.1.1"}}, "m": {"a": 2}})
    with QueuedMessage(qid, path) as msg:
        assert [r.status for r in msg.envelope.recipients] == ["sent", "bounced"]
        assert msg.envelope.attempts == 2
        assert msg.read_message() == message()


def test_operator_functions(tmp_path: Path) -> None:
    q = Queue(tmp_path / "q")
    a = q.inject(envelope(), message("a"))
    b = q.inject(envelope(sender="x@y"), message("b"))
    listing = {e.queue_id: e for e in q.list_messages()}
    assert listing[a].state == "incoming" and listing[b].sender == "x@y"
    assert listing[a].size == len(message("a"))
    assert listing[a].recipients[0].address == "bob@example.com"

    assert q.hold(a) == 1 and q.locate(a) == "hold"
    assert q.hold(a) == 0
    shown = q.show(a)
    assert shown.entry.state == "hold" and shown.message == message("a")
    assert q.release(a) == 1 and q.locate(a) == "incoming"

    assert q.hold("ALL") == 2
    assert q.release("ALL") == 2
    os.rename(q.path("incoming", b), q.path("deferred", b))
    os.utime(q.path("deferred", b), (2e9, 2e9))
    assert q.flush() == 1
    assert q.path("deferred", b).stat().st_mtime < 2e9

    assert q.delete(a) == 1 and q.locate(a) is None
    with pytest.raises(KeyError):
        q.show(a)
    with pytest.raises(ValueError):
        q.hold("../incoming/x")
    with pytest.raises(ValueError):
        q.delete("")
    assert q.delete("ALL") == 1
    assert q.list_messages() == []


def test_recover_moves_active_and_cleans_dead_tmp(tmp_path: Path) -> None:
    q = Queue(tmp_path / "q")
    qid = q.inject(envelope(), message())
    q.move(qid, "incoming", "active")
    (q.root / "tmp" / "0000000000000000.999999999").write_bytes(b"partial")
    live = q.open_incoming(envelope())
    assert q.recover() == 1
    assert q.locate(qid) == "incoming"
    assert queue_files(q.root, "tmp") == [f"{live.queue_id}.{os.getpid()}"]
    live.abort()
