"""Blocking calls from the event loop, several per thread hop.

The queue manager makes small blocking calls per message (rename into ``active/`` and read the
envelope; close and unlink when done) that must stay off the event loop. One ``to_thread`` per call
costs a thread hand-off each way, more CPU than the call itself; under load many messages make the
same call in the same loop iteration, so ``ThreadBatch`` runs all calls queued while none is in a
thread as one executor job and resolves their futures in one callback. A call made while a job runs
waits for it and goes in the next job, so there is at most one job per batcher at a time; that is
meant for calls that take microseconds, not for fsyncs, which gain from running side by side.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class ThreadBatch(Generic[T]):
    """``await batch(*args)`` runs ``fn(*args)`` in the default executor, batched with concurrent calls."""

    def __init__(self, fn: Callable[..., T]) -> None:
        self._fn = fn
        self._waiting: list[tuple[tuple[Any, ...], asyncio.Future[T]]] = []
        self._busy = False

    async def __call__(self, *args: Any) -> T:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._waiting.append((args, fut))
        if not self._busy:
            self._busy = True
            loop.call_soon(self._launch, loop)  # calls made in this loop iteration join the job
        return await fut

    def _launch(self, loop: asyncio.AbstractEventLoop) -> None:
        jobs, self._waiting = self._waiting, []
        if not jobs:
            self._busy = False
            return
        done = loop.run_in_executor(None, self._run, [args for args, _ in jobs])
        done.add_done_callback(lambda f: self._finish(loop, jobs, f))

    def _run(self, calls: list[tuple[Any, ...]]) -> list[tuple[bool, Any]]:
        out: list[tuple[bool, Any]] = []
        for args in calls:
            try:
                out.append((True, self._fn(*args)))
            except BaseException as exc:  # handed to the caller's future
                out.append((False, exc))
        return out

    def _finish(
        self,
        loop: asyncio.AbstractEventLoop,
        jobs: list[tuple[tuple[Any, ...], asyncio.Future[T]]],
        done: asyncio.Future[list[tuple[bool, Any]]],
    ) -> None:
        exc = done.exception() if not done.cancelled() else asyncio.CancelledError()
        results = done.result() if exc is None else [(False, exc)] * len(jobs)
        for (_, fut), (ok, value) in zip(jobs, results, strict=True):
            if fut.done():
                continue
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)
        self._launch(loop)
