from __future__ import annotations

import asyncio
import threading

import pytest

from dovetail.queue.batch import ThreadBatch


def test_calls_queued_while_a_job_runs_share_the_next_job() -> None:
    started = threading.Event()
    release = threading.Event()
    trace: list[tuple[str, int, int]] = []

    def work(n: int) -> int:
        trace.append(("start", n, threading.get_ident()))
        if n == 0:
            started.set()
            release.wait(10)
        if n == 3:
            raise ValueError("three")
        trace.append(("end", n, threading.get_ident()))
        return n * 10

    batch = ThreadBatch(work)

    async def main() -> list[object]:
        first = asyncio.create_task(batch(0))
        await asyncio.to_thread(started.wait, 10)
        rest = [asyncio.create_task(batch(n)) for n in range(1, 6)]
        await asyncio.sleep(0)  # each task has queued its call
        release.set()
        return await asyncio.gather(first, *rest, return_exceptions=True)

    results = asyncio.run(main())
    assert results[:3] == [0, 10, 20] and results[4:] == [40, 50]
    assert isinstance(results[3], ValueError) and str(results[3]) == "three"
    events = [(kind, n) for kind, n, _ in trace]
    assert events.index(("end", 0)) < events.index(("start", 1))  # none of them started beside call 0
    later = {ident for kind, n, ident in trace if n >= 1}
    assert len(later) == 1  # calls 1..5 ran one after another in one executor job


def test_a_lone_call_runs_in_a_thread_and_returns() -> None:
    batch = ThreadBatch(lambda: threading.get_ident())

    async def main() -> tuple[int, int]:
        return await batch(), threading.get_ident()

    worker, loop_thread = asyncio.run(main())
    assert worker != loop_thread


def test_errors_reach_only_their_caller() -> None:
    def work(x: int) -> int:
        if x < 0:
            raise OSError("negative")
        return x

    batch = ThreadBatch(work)

    async def main() -> list[object]:
        return await asyncio.gather(batch(1), batch(-1), batch(2), return_exceptions=True)

    ok1, err, ok2 = asyncio.run(main())
    assert (ok1, ok2) == (1, 2)
    assert isinstance(err, OSError)
    with pytest.raises(OSError):
        asyncio.run(batch(-5))
