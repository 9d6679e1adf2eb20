"""Helpers for queue and delivery tests: envelopes, a recording agent, a manager runner."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dovetail.queue import (
    DeliveryResult,
    Envelope,
    Queue,
    QueueConfig,
    QueuedMessage,
    QueueManager,
    QueueRecipient,
)


def envelope(sender: str = "alice@example.org", rcpts: tuple[str, ...] = ("bob@example.com",), **kw: Any) -> Envelope:
    return Envelope(sender=sender, recipients=[QueueRecipient(r) for r in rcpts], **kw)


def message(subject: str = "hello", body: str = "Hello there.\r\n") -> bytes:
    return (
        f"From: Alice <alice@example.org>\r\nTo: bob@example.com\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '.')}@example.org>\r\n\r\n{body}"
    ).encode()


@dataclass
class Delivered:
    queue_id: str
    sender: str
    recipient: str
    data: bytes


Outcome = Callable[[QueueRecipient, QueuedMessage], tuple[str, str, str]]


@dataclass
class RecordingAgent:
    """Records every delivery; ``outcome`` decides the status per recipient (default: sent)."""

    outcome: Outcome | None = None
    delay: float = 0.0
    delivered: list[Delivered] = field(default_factory=list)
    calls: int = 0
    active: int = 0
    max_active: int = 0
    _changed: asyncio.Condition | None = None

    def _cond(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    async def deliver(self, msg: QueuedMessage, rcpts: list[QueueRecipient]) -> list[DeliveryResult]:
        self.calls += 1
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            with msg.open() as fh:
                data = fh.read()
            out = []
            for r in rcpts:
                status, code, reason = self.outcome(r, msg) if self.outcome else ("sent", "2.0.0", "ok")
                if status == "sent":
                    self.delivered.append(Delivered(msg.queue_id, msg.envelope.sender, r.address, data))
                out.append(DeliveryResult(r, status, code, reason, "test"))  # type: ignore[arg-type]
            return out
        finally:
            self.active -= 1
            async with self._cond():
                self._cond().notify_all()

    async def wait_for(self, predicate: Callable[[], bool], limit: float = 10.0) -> None:
        async with asyncio.timeout(limit), self._cond():
            await self._cond().wait_for(predicate)


async def with_manager(
    queue: Queue,
    agent: Any,
    body: Callable[[QueueManager], Awaitable[None]],
    config: QueueConfig | None = None,
) -> QueueManager:
    """Run a manager around ``body`` and stop it cleanly afterwards."""
    mgr = QueueManager(queue, lambda _addr: agent, config or QueueConfig(scan_interval=3600))
    task = asyncio.create_task(mgr.run())
    started = asyncio.create_task(mgr.started.wait())
    done, _ = await asyncio.wait({task, started}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    try:
        await body(mgr)
    finally:
        mgr.stop()
        await asyncio.wait_for(task, 10)
    return mgr


async def wait_until(predicate: Callable[[], bool], limit: float = 10.0) -> None:
    """Poll a filesystem condition that has no event to wait on (rename by another task)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not predicate():
        if loop.time() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.01)


def queue_files(root: Path, state: str) -> list[str]:
    return sorted(p.name for p in (root / state).iterdir())
