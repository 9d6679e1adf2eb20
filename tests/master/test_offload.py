"""``offload.to_thread``: the storage hop of IMAP commands, in the worker's executor, with the caller's
context, results and exceptions handed back, and a cancelled caller leaving the work to finish."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from dovetail.offload import to_thread, use_executor

WHO: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")


def test_work_runs_in_the_installed_executor_with_the_callers_context() -> None:
    async def main() -> tuple[str, str, int]:
        use_executor(asyncio.get_running_loop(), ThreadPoolExecutor(2, thread_name_prefix="storage-test"))
        WHO.set("session 7")
        return await to_thread(lambda a, b=0: (threading.current_thread().name, WHO.get(), a + b), 40, b=2)

    name, who, total = asyncio.run(main())
    assert name.startswith("storage-test") and who == "session 7" and total == 42


def test_an_exception_reaches_the_caller() -> None:
    def fail() -> None:
        raise LookupError("no such message")

    async def main() -> None:
        await to_thread(fail)

    with pytest.raises(LookupError, match="no such message"):
        asyncio.run(main())


def test_a_cancelled_caller_leaves_the_work_to_finish() -> None:
    started, release, finished = threading.Event(), threading.Event(), threading.Event()

    def work() -> int:
        started.set()
        release.wait(10)
        finished.set()
        return 1

    async def main() -> None:
        task = asyncio.ensure_future(to_thread(work))
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()
        # The loop's executor is shut down by asyncio.run, which waits for the work under way.

    asyncio.run(main())
    assert finished.is_set()


def test_a_loop_without_an_installed_executor_gets_one() -> None:
    async def main() -> str:
        return await to_thread(lambda: threading.current_thread().name)

    assert asyncio.run(main()) != threading.current_thread().name
