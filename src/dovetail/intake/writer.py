"""What the MX's sinks need of a queue writer: the queue's own ``QueueWriter`` or the content filter in front."""

from __future__ import annotations

from typing import Protocol

from ..queue import Envelope


class IntakeWriter(Protocol):
    queue_id: str
    envelope: Envelope

    def annotate(self, extra: dict[str, str]) -> None: ...

    async def awrite(self, data: bytes) -> None: ...

    async def acommit(self) -> str: ...

    async def aabort(self) -> None: ...
