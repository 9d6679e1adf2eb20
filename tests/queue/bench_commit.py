"""Measure commit throughput with and without group commit: ``python tests/queue/bench_commit.py [DIR]``.

Runs concurrent committers (threads, and asyncio tasks using ``acommit``) of 2 KB messages and prints
messages per second for each mode, side by side so the numbers are comparable.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from dovetail.queue import Envelope, Queue, QueueRecipient

BODY = b"Subject: bench\r\n\r\n" + b"x" * 2000 + b"\r\n"


def _env() -> Envelope:
    return Envelope("a@example.org", [QueueRecipient("b@example.com")])


def threads(root: Path, group: bool, workers: int, per: int) -> float:
    q = Queue(root, group_commit=group)

    def run() -> None:
        for _ in range(per):
            q.inject(_env(), BODY)

    ts = [threading.Thread(target=run) for _ in range(workers)]
    start = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return workers * per / (time.perf_counter() - start)


def tasks(root: Path, group: bool, concurrency: int, total: int) -> float:
    q = Queue(root, group_commit=group)

    async def one(sem: asyncio.Semaphore) -> None:
        async with sem:
            w = await q.aopen_incoming(_env())
            await w.awrite(BODY)
            await w.acommit()

    async def main() -> float:
        sem = asyncio.Semaphore(concurrency)
        start = time.perf_counter()
        await asyncio.gather(*(one(sem) for _ in range(total)))
        return total / (time.perf_counter() - start)

    return asyncio.run(main())


def main() -> None:
    base = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="qbench-"))
    for name, fn, args in [
        ("threads x1", threads, (1, 400)),
        ("threads x16", threads, (16, 50)),
        ("threads x64", threads, (64, 15)),
        ("asyncio x20", tasks, (20, 1000)),
        ("asyncio x100", tasks, (100, 1000)),
    ]:
        row = []
        for group in (False, True):
            root = base / f"{name.replace(' ', '')}-{group}"
            row.append(fn(root, group, *args))
            shutil.rmtree(root)
        print(f"{name:14} direct {row[0]:7.0f}/s   group {row[1]:7.0f}/s")


if __name__ == "__main__":
    main()
