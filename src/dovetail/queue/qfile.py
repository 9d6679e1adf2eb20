"""The queue file format: one file per message, written once, then appended to.

Layout (all integers big-endian)::

    offset 0   8 bytes  magic b"DTQUEUE1"
           8   u64      length E of the envelope JSON
          16   u64      length M of the message bytes (all ones until commit)
          24   u32      CRC-32 of the envelope JSON
          28   4 bytes  zero
          32   E bytes  envelope JSON (UTF-8)
        32+E   M bytes  message, exactly as received
      32+E+M   status records, each: u32 length L, u32 CRC-32 of the payload, L bytes JSON

Why this shape: the envelope is known before the first message byte, so it is written first and
the message streams behind it without being held in memory; the message length is patched in
place at commit, before the fsync. Delivery state is an append-only log of small status records
after the message: marking recipients done costs one small append and one fsync, never a rewrite
of the message. A record torn by a crash fails its length or CRC check and is ignored (and cut off
before the next append), so the state read back is always a prefix of what was written. Files only
ever become visible in a queue directory by rename after the fsync, so a partial file never appears
as a message; one that does not parse is moved to ``corrupt/`` by the queue manager.
"""

from __future__ import annotations

import io
import json
import os
import struct
import threading
import zlib
from pathlib import Path
from typing import Any, BinaryIO

from dovetail.queue.envelope import Envelope

MAGIC = b"DTQUEUE1"
HEADER = struct.Struct(">8sQQI4x")
RECORD = struct.Struct(">II")
UNCOMMITTED = (1 << 64) - 1
MAX_ENVELOPE = 16 * 1024 * 1024
MAX_RECORD = 4 * 1024 * 1024


class CorruptQueueFile(Exception):
    """The file is not a complete, well-formed queue file."""


def encode_header(envelope_json: bytes, message_len: int = UNCOMMITTED) -> bytes:
    return HEADER.pack(MAGIC, len(envelope_json), message_len, zlib.crc32(envelope_json))


def encode_envelope(envelope: Envelope) -> bytes:
    return json.dumps(envelope.to_json(), separators=(",", ":"), ensure_ascii=False).encode()


def encode_record(update: dict[str, Any]) -> bytes:
    payload = json.dumps(update, separators=(",", ":"), ensure_ascii=False).encode()
    return RECORD.pack(len(payload), zlib.crc32(payload)) + payload


def apply_record(envelope: Envelope, update: dict[str, Any]) -> None:
    """Fold one status record into the envelope (the log replays in order)."""
    for key, fields in update.get("r", {}).items():
        rcpt = envelope.recipients[int(key)]
        if "s" in fields:
            rcpt.status = fields["s"]
        if "c" in fields:
            rcpt.dsn_code = fields["c"]
        if "w" in fields:
            rcpt.reason = fields["w"]
        if "y" in fields:
            rcpt.relay = fields["y"]
        if "t" in fields:
            rcpt.done_at = fields["t"]
        if "n" in fields:
            rcpt.notified = bool(fields["n"])
    msg = update.get("m", {})
    if "a" in msg:
        envelope.attempts = int(msg["a"])
    if "x" in msg:
        envelope.next_attempt = float(msg["x"])
    if "w" in msg:
        envelope.last_reason = msg["w"]
    if "d" in msg:
        envelope.delay_warned = bool(msg["d"])


class _Slice(io.RawIOBase):
    """A read-only, seekable window [start, start+length) of a file descriptor (pread based)."""

    def __init__(self, fd: int, start: int, length: int) -> None:
        self._fd = os.dup(fd)
        self._start = start
        self._length = length
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), self._length - self._pos)
        if want <= 0:
            return 0
        data = os.pread(self._fd, want, self._start + self._pos)
        n = len(data)
        buffer[:n] = data
        self._pos += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._length}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


class QueuedMessage:
    """A committed queue file opened for delivery: envelope with state applied, message as a stream.

    The file descriptor stays valid when an operator renames the file to another queue state, so
    status records land in the same file wherever it has moved.
    """

    def __init__(self, queue_id: str, path: Path, writable: bool = True) -> None:
        self.queue_id = queue_id
        self.path = path
        self._fd = os.open(path, os.O_RDWR if writable else os.O_RDONLY)
        self._append_lock = threading.Lock()
        try:
            self._load()
        except BaseException:
            os.close(self._fd)
            raise

    def _load(self) -> None:
        st = os.fstat(self._fd)
        head = os.pread(self._fd, HEADER.size, 0)
        if len(head) != HEADER.size:
            raise CorruptQueueFile("short header")
        magic, env_len, msg_len, env_crc = HEADER.unpack(head)
        if magic != MAGIC:
            raise CorruptQueueFile("bad magic")
        if msg_len == UNCOMMITTED:
            raise CorruptQueueFile("file was never committed")
        if env_len > MAX_ENVELOPE or HEADER.size + env_len + msg_len > st.st_size:
            raise CorruptQueueFile("lengths exceed the file")
        env_json = os.pread(self._fd, env_len, HEADER.size)
        if zlib.crc32(env_json) != env_crc:
            raise CorruptQueueFile("envelope checksum mismatch")
        try:
            self.envelope = Envelope.from_json(json.loads(env_json))
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptQueueFile(f"bad envelope: {exc}") from exc
        self.envelope.size = msg_len
        self.message_offset = HEADER.size + env_len
        self.size = msg_len
        pos = self.message_offset + msg_len
        tail = os.pread(self._fd, st.st_size - pos, pos) if st.st_size > pos else b""
        self.records_end = pos + self._replay(tail)

    def _replay(self, tail: bytes) -> int:
        off = 0
        while off + RECORD.size <= len(tail):
            length, crc = RECORD.unpack_from(tail, off)
            body = tail[off + RECORD.size : off + RECORD.size + length]
            if length > MAX_RECORD or len(body) != length or zlib.crc32(body) != crc:
                break
            try:
                apply_record(self.envelope, json.loads(body))
            except (ValueError, KeyError, TypeError, IndexError) as exc:
                raise CorruptQueueFile(f"bad status record: {exc}") from exc
            off += RECORD.size + length
        return off

    def open(self) -> BinaryIO:
        """A new buffered reader positioned at the first message byte; the caller closes it."""
        return io.BufferedReader(_Slice(self._fd, self.message_offset, self.size), 65536)

    def read_message(self) -> bytes:
        return os.pread(self._fd, self.size, self.message_offset)

    def read_headers(self, limit: int = 1024 * 1024) -> bytes:
        """The header section (up to the blank line, or ``limit`` bytes)."""
        data = os.pread(self._fd, min(self.size, limit), self.message_offset)
        for sep in (b"\r\n\r\n", b"\n\n"):
            end = data.find(sep)
            if end >= 0:
                return data[: end + len(sep)]
        return data

    def append_update(self, update: dict[str, Any], sync: bool = True) -> None:
        """Durably append one status record and fold it into ``envelope``."""
        record = encode_record(update)
        with self._append_lock:
            if os.fstat(self._fd).st_size != self.records_end:
                os.ftruncate(self._fd, self.records_end)
            os.pwrite(self._fd, record, self.records_end)
            if sync:
                os.fsync(self._fd)
            self.records_end += len(record)
            apply_record(self.envelope, update)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> QueuedMessage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
