"""Blocking work off the event loop, with a lighter hop than ``asyncio.to_thread``.

``asyncio.to_thread`` wraps the executor's future in an asyncio future and chains the two by callbacks
both ways: measured under uvloop, about 70 µs of CPU per call against 40 µs for the hop here, which
submits a job that settles a plain loop future itself. An IMAP command makes one hop to the storage, so
the difference is a few percent of the server's CPU per command. The work runs in the loop's default
executor (the one a worker installs, which ``asyncio.run`` shuts down waiting for the work under way; one
is made and installed here for a loop that has none of ours), in a copy of the caller's context, as
``asyncio.to_thread`` runs it. A caller cancelled meanwhile leaves the work to finish unheard.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any, TypeVar
from weakref import WeakKeyDictionary

T = TypeVar("T")

_EXECUTORS: WeakKeyDictionary[asyncio.AbstractEventLoop, Executor] = WeakKeyDictionary()


def use_executor(loop: asyncio.AbstractEventLoop, executor: Executor) -> None:
    """Make ``executor`` the loop's default executor and the one :func:`to_thread` submits to."""
    loop.set_default_executor(executor)
    _EXECUTORS[loop] = executor


def _executor(loop: asyncio.AbstractEventLoop) -> Executor:
    executor = _EXECUTORS.get(loop)
    if executor is None:
        executor = ThreadPoolExecutor()
        use_executor(loop, executor)
    return executor


def _settle(fut: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if fut.done():
        return  # the caller was cancelled meanwhile
    if exc is None:
        fut.set_result(result)
    else:
        fut.set_exception(exc)


def to_thread(func: Callable[..., T], /, *args: Any, **kwargs: Any) -> asyncio.Future[T]:
    """Run ``func(*args, **kwargs)`` in a worker thread; await the returned future for its result."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()
    ctx = contextvars.copy_context()

    def job() -> None:
        try:
            result = ctx.run(func, *args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine, as to_thread does
            outcome: tuple[Any, BaseException | None] = (None, exc)
        else:
            outcome = (result, None)
        try:
            loop.call_soon_threadsafe(_settle, fut, *outcome)
        except RuntimeError:
            pass  # the loop closed meanwhile: nobody is waiting any more

    _executor(loop).submit(job)
    return fut
