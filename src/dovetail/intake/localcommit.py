"""Committing a message into local mailboxes before answering: the step lmtpd and the MX share.

lmtpd answers each recipient only after its copy is in the Maildir (RFC 2033 §4.2); the MX, when every
recipient of a message is a mailbox on this node, does the same before its one ``250``
(:mod:`.direct`). Both hand the message to the local delivery agent the queue uses for its own local
mail (``Delivered-To:`` loop checks, quota, the Junk folder, the storage API's ``deliver()`` with file
and directory fsync, the replies hand-over), so a message is stored the same way whichever door it
came in by. ``deliver_held`` is that one step; the message is held in memory or, when large, in a file
under the queue's ``tmp`` folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import tempfile
from collections.abc import Awaitable
from pathlib import Path
from typing import BinaryIO, Protocol

from ..delivery.agent import Deliverable
from ..queue import Envelope as QueueEnvelope
from ..queue import QueueRecipient
from ..queue.agent import DeliveryResult

HOLD_BYTES = 256 * 1024  # a message up to this size stays in memory; a larger one goes to a file


class LocalAgent(Protocol):
    """The local delivery agent (``MaildirDeliveryAgent``, wrapped for the replies hand-over)."""

    def deliver(self, message: Deliverable, recipients: list[QueueRecipient]) -> Awaitable[list[DeliveryResult]]: ...


class HeldMessage:
    """A message received but not queued, as the delivery agent reads it (``Deliverable``)."""

    def __init__(self, queue_id: str, envelope: QueueEnvelope, spool_dir: Path | None = None,
                 data: bytes = b"") -> None:
        self.queue_id = queue_id
        self.envelope = envelope
        self.size = len(data)
        self._memory = bytearray()
        self._data: bytes | None = data or None  # a whole message handed over at once: not copied
        self._spool_dir = spool_dir
        self._file: BinaryIO | None = None
        self._path: str | None = None

    def write(self, data: bytes) -> None:
        if self._data is not None:
            self._memory, self._data = bytearray(self._data), None
        if self._file is None and len(self._memory) + len(data) > HOLD_BYTES:
            # "<name>.<pid>", as the queue's own tmp files: its crash recovery removes only dead writers' files
            fd, self._path = tempfile.mkstemp(prefix="lmtp", suffix=f".{os.getpid()}", dir=self._spool_dir)
            self._file = os.fdopen(fd, "wb")
            self._file.write(self._memory)
            self._memory = bytearray()
        if self._file is not None:
            self._file.write(data)
        else:
            self._memory += data
        self.size += len(data)

    @property
    def on_disk(self) -> bool:
        return self._file is not None

    def finish(self) -> None:
        """No more writes: flush what went to the file (it is read back, never needed after a crash)."""
        if self._file is not None:
            self._file.flush()
        self.envelope.size = self.size

    def open(self) -> BinaryIO:
        if self._path is not None:
            return open(self._path, "rb")  # noqa: SIM115 - the caller closes it
        return io.BytesIO(self._data if self._data is not None else bytes(self._memory))

    def read_headers(self, limit: int = 1024 * 1024) -> bytes:
        if self._path is None:
            data = (self._data if self._data is not None else bytes(self._memory))[:limit]
        else:
            with self.open() as stream:
                data = stream.read(min(self.size, limit))
        for sep in (b"\r\n\r\n", b"\n\n"):
            end = data.find(sep)
            if end >= 0:
                return data[: end + len(sep)]
        return data

    def discard(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
        if self._path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path)
        self._memory = bytearray()
        self._data = None


async def deliver_held(agent: LocalAgent, message: HeldMessage,
                       recipients: list[QueueRecipient] | None = None) -> list[DeliveryResult]:
    """Deliver ``message`` to ``recipients`` (all of its envelope's by default) through the local agent;
    one result per recipient, in envelope order, each ``sent`` only once its copies and the replies
    hand-over are on stable storage. An agent failure defers the recipients it left without a result."""
    if message.on_disk:
        await asyncio.to_thread(message.finish)
    else:
        message.finish()
    rcpts = message.envelope.recipients if recipients is None else recipients
    try:
        results = await agent.deliver(message, rcpts)
    except Exception as exc:  # noqa: BLE001 - reported per recipient, as the queue manager does
        results = []
        reason = f"local delivery failed: {exc!r}"
    else:
        reason = "no delivery result"
    by_index = {r.recipient.index: r for r in results}
    return [by_index.get(r.index) or DeliveryResult(r, "deferred", "4.3.0", reason) for r in rcpts]
