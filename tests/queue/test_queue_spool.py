from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest
from tests.queue.helpers_queue import envelope, message, queue_files

from dovetail.queue import Queue, QueuedMessage
from dovetail.queue.dirsync import GroupFsync


def test_spooled_message_touches_disk_only_at_commit(tmp_path: Path) -> None:
    q = Queue(tmp_path / "q")
    body = message("small")

    async def main() -> str:
        w = await q.aopen_incoming(envelope(), spool=64 * 1024)
        await w.awrite(body[:10])
        await w.awrite(body[10:])
        assert w.in_memory
        assert os.listdir(q.root / "tmp") == []
        return await w.acommit()

    qid = asyncio.run(main())
    assert queue_files(q.root, "incoming") == [qid]
    with QueuedMessage(qid, q.path("incoming", qid), writable=False) as msg:
        assert msg.read_message() == body


def test_spool_overflow_streams_to_file(tmp_path: Path) -> None:
    q = Queue(tmp_path / "q")
    chunks = [bytes([65 + i]) * 1000 for i in range(5)]
    w = q.open_incoming(envelope(), spool=2500)
    for chunk in chunks[:2]:
        w.write(chunk)
    assert w.in_memory
    w.write(chunks[2])
    assert not w.in_memory
    assert len(os.listdir(q.root / "tmp")) == 1
    for chunk in chunks[3:]:
        w.write(chunk)
    qid = w.commit()
    with QueuedMessage(qid, q.path("incoming", qid), writable=False) as msg:
        assert msg.read_message() == b"".join(chunks)
    assert os.listdir(q.root / "tmp") == []


def test_spooled_abort_leaves_nothing(tmp_path: Path) -> None:
    q = Queue(tmp_path / "q")

    async def main() -> None:
        small = await q.aopen_incoming(envelope(), spool=1024)
        await small.awrite(b"x" * 100)
        await small.aabort()
        big = await q.aopen_incoming(envelope(), spool=1024)
        await big.awrite(b"x" * 5000)
        await big.aabort()

    asyncio.run(main())
    assert os.listdir(q.root / "tmp") == []
    assert queue_files(q.root, "incoming") == []


def test_group_fsync_covers_every_caller_with_fewer_fsyncs(tmp_path: Path) -> None:
    syncer = GroupFsync(tmp_path)
    start = threading.Barrier(16)
    done: list[int] = []

    def caller(i: int) -> None:
        start.wait()
        for _ in range(10):
            syncer.sync()
        done.append(i)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(done) == list(range(16))
    assert 1 <= syncer.fsyncs <= 160


def test_group_fsync_failure_reaches_its_callers(tmp_path: Path) -> None:
    syncer = GroupFsync(tmp_path)
    fd = syncer._fd
    os.close(fd)  # fsync of a closed fd fails with EBADF
    for _ in range(2):  # a failed batch must not leave the next caller waiting forever
        with pytest.raises(OSError):
            syncer.sync()
    syncer._fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    syncer.sync()
    assert syncer.fsyncs == 3


def test_failed_spooled_commit_leaves_nothing_behind(tmp_path: Path) -> None:
    q = Queue(tmp_path / "q")
    w = q.open_incoming(envelope(), spool=64 * 1024)
    w.write(message("lost"))
    os.rmdir(q.root / "incoming")  # the rename into incoming/ fails
    with pytest.raises(FileNotFoundError):
        w.commit()
    assert os.listdir(q.root / "tmp") == []


def test_spooled_commit_writes_the_final_header(tmp_path: Path) -> None:
    q = Queue(tmp_path / "q")
    body = message("x" * 5000)
    w = q.open_incoming(envelope(), spool=64 * 1024)
    for i in range(0, len(body), 1000):
        w.write(body[i : i + 1000])
    qid = w.commit()
    with QueuedMessage(qid, q.path("incoming", qid), writable=False) as msg:
        assert msg.size == len(body) and msg.read_message() == body
