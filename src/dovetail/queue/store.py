"""The durable queue: intake (``open_incoming``), state directories and operator functions.

A message is written to ``tmp/``, fsynced, renamed into ``incoming/`` and then the directory is
fsynced; only then does ``commit()`` return, so an SMTP server may answer 250. State changes are
renames between ``incoming/ active/ deferred/ hold/ corrupt/``, which is what makes the operator
functions safe while a queue manager runs: each rename either happens whole or finds the file gone.

The directory fsync is shared by concurrent commits when ``group_commit`` is on
(``dirsync.GroupFsync``): a commit that finds an fsync of ``incoming/`` running waits for it, then
one waiting commit runs a single fsync covering all of them. Each commit still returns only after an
fsync that began after its own rename has completed, so "250 only after stable storage" holds either
way. The leader is one of the committing threads, not a separate committer thread, so a commit with
no company costs exactly what it does without batching.

Blocking work stays off the event loop: ``QueueWriter.awrite/acommit/aabort`` run the disk work in
the default executor. A writer opened with ``spool`` holds a small message in memory, and creates,
writes, fsyncs and renames its file in the single thread call of ``acommit``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from dovetail.durable import write_fsync
from dovetail.log import get_logger
from dovetail.queue.dirsync import GroupFsync
from dovetail.queue.envelope import Envelope, QueueRecipient
from dovetail.queue.ids import is_queue_id, new_queue_id
from dovetail.queue.qfile import (
    HEADER,
    CorruptQueueFile,
    QueuedMessage,
    encode_envelope,
    encode_header,
    encode_record,
)

log = get_logger("queue")

STATES = ("incoming", "active", "deferred", "hold", "corrupt")
TRIGGER_INCOMING = b"I"
TRIGGER_DEFERRED = b"F"
STALE_TMP_SECONDS = 24 * 3600


class QueueWriter:
    """One message being received. Not thread-safe; use from one thread or one task."""

    def __init__(self, queue: Queue, envelope: Envelope, spool: int = 0) -> None:
        self._queue = queue
        self.queue_id = new_queue_id()
        self.envelope = envelope
        self._tmp = f"{queue._dirs['tmp']}/{self.queue_id}.{os.getpid()}"  # str: pathlib joins cost more
        self._env_bytes: bytes | None = None  # encoded when a file needs it: a message delivered at intake never does
        self._spool = spool
        self._held: list[bytes] = []
        self._records: list[bytes] = []  # status records that go in with the message (see ``record``)
        self._file: BinaryIO | None = None
        self.size = 0
        self._done = False
        if spool <= 0:
            self._open_file()

    @property
    def _env(self) -> bytes:
        if self._env_bytes is None:
            self._env_bytes = encode_envelope(self.envelope)
        return self._env_bytes

    def _open_file(self) -> BinaryIO:
        fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        file = self._file = os.fdopen(fd, "wb", buffering=65536)
        file.write(encode_header(self._env))
        file.write(self._env)
        held, self._held = self._held, []
        for data in held:
            file.write(data)
        return file

    def annotate(self, extra: dict[str, str]) -> None:
        """Add intake facts to the envelope's ``extra`` (a DMARC quarantine, ...). Only before the
        first byte is written: the envelope is encoded into the file ahead of the message."""
        if self._file is not None or self._held or self._done:
            raise ValueError("the envelope is already written")
        self.envelope.extra.update(extra)
        self._env_bytes = None

    def record(self, update: dict[str, Any]) -> None:
        """A status record (as the queue manager appends) committed together with the message: the
        intake delivered some recipients itself and queues the rest, and the file says so from the start."""
        if self._done:
            raise ValueError("writer is closed")
        self._records.append(encode_record(update))

    def held(self) -> bytes:
        """The message so far, while it is only held in memory (``in_memory``)."""
        if self._file is not None:
            raise ValueError("the message is in its file, not in memory")
        return b"".join(self._held)

    @property
    def in_memory(self) -> bool:
        """True while the message is only held in memory (no file yet); writes then need no thread."""
        return self._file is None

    def holds(self, more: int) -> bool:
        """Whether ``more`` bytes would still fit in memory without creating the file."""
        return self._file is None and self.size + more <= self._spool

    def write(self, data: bytes) -> None:
        """Append message bytes: held in memory up to ``spool`` bytes, else streamed to disk."""
        if self._done:
            raise ValueError("writer is closed")
        file = self._file
        if file is None:
            if self.size + len(data) <= self._spool:
                self._held.append(bytes(data))
                self.size += len(data)
                return
            try:
                file = self._open_file()
            except BaseException:
                self._done = True
                self._discard()
                raise
        file.write(data)
        self.size += len(data)

    def _finish_file(self) -> None:
        if self._done:
            raise ValueError("writer is closed")
        self._done = True
        if self._file is None:
            self._write_spooled()
            return
        try:
            for record in self._records:
                self._file.write(record)
            self._file.flush()
            os.pwrite(self._file.fileno(), encode_header(self._env, self.size), 0)
            os.fsync(self._file.fileno())
            self._file.close()
            os.rename(self._tmp, f"{self._queue._dirs['incoming']}/{self.queue_id}")
        except BaseException:
            self._discard()
            raise

    def _write_spooled(self) -> None:
        """A message held in memory: its size is known, so header, envelope and message go out in one
        write, with no header rewrite afterwards."""
        data = b"".join([encode_header(self._env, self.size), self._env, *self._held, *self._records])
        self._held = []
        fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            try:
                write_fsync(fd, data)
            finally:
                os.close(fd)
            os.rename(self._tmp, f"{self._queue._dirs['incoming']}/{self.queue_id}")
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._tmp)
            raise

    def commit(self) -> str:
        """Make the message durable in ``incoming/``; returns the queue id once it is on stable storage."""
        self._finish_file()
        self._queue._incoming_sync.sync()
        self._queue.wake(TRIGGER_INCOMING)
        return self.queue_id

    def abort(self) -> None:
        """Forget the message; nothing of it stays on disk."""
        if not self._done:
            self._done = True
            self._discard()

    def _discard(self) -> None:
        self._held = []
        if self._file is None:
            return
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._tmp)

    async def awrite(self, data: bytes) -> None:
        """``write`` for asyncio callers; bytes that stay in memory cost no thread hop."""
        if self.holds(len(data)) and not self._done:
            self.write(data)
        else:
            await asyncio.to_thread(self.write, data)

    async def acommit(self) -> str:
        """``commit`` for asyncio callers: file creation, fsyncs and rename in one thread call."""
        return await asyncio.to_thread(self.commit)

    async def aabort(self) -> None:
        if self._file is None:
            self.abort()
        else:
            await asyncio.to_thread(self.abort)


@dataclass
class QueueEntry:
    """One line of the queue listing (what ``postqueue -p`` shows)."""

    queue_id: str
    state: str
    size: int
    arrival: float
    sender: str
    recipients: list[QueueRecipient]
    reason: str | None
    next_attempt: float
    attempts: int


@dataclass
class QueueShow:
    entry: QueueEntry
    envelope: Envelope
    message: bytes


class Queue:
    """A queue directory. Safe to use from several threads and several processes at once."""

    def __init__(self, root: Path, group_commit: bool = False) -> None:
        self.root = Path(root)
        for name in (*STATES, "tmp", "public", "pid"):
            (self.root / name).mkdir(parents=True, exist_ok=True)
        self.trigger_path = self.root / "public" / "qmgr"
        if not self.trigger_path.exists():
            with contextlib.suppress(FileExistsError):
                os.mkfifo(self.trigger_path, 0o622)
        self.group_commit = group_commit
        self._dirs = {name: str(self.root / name) for name in (*STATES, "tmp")}
        self._incoming_sync = GroupFsync(self.root / "incoming", group_commit)
        self._listeners: list[Callable[[bytes], None]] = []
        self._public = str(self.root / "public")
        self._trigger_names: list[str] = ["qmgr"]  # the FIFOs in public/: one per queue manager shard
        self._public_stamp = -1
        self._trigger_fds: dict[str, int] = {}
        self._trigger_lock = threading.Lock()

    # --- intake -------------------------------------------------------------------------------

    def open_incoming(self, envelope: Envelope, spool: int = 0) -> QueueWriter:
        """Start a message; its queue id is ``writer.queue_id`` from now on.

        With ``spool`` > 0 the first ``spool`` bytes are held in memory and the file is created only
        when they overflow or at commit, so a small message touches the disk once, in ``commit``.
        """
        if not envelope.recipients:
            raise ValueError("a message needs at least one recipient")
        return QueueWriter(self, envelope, spool)

    async def aopen_incoming(self, envelope: Envelope, spool: int = 0) -> QueueWriter:
        if spool > 0:
            return self.open_incoming(envelope, spool)
        return await asyncio.to_thread(self.open_incoming, envelope)

    def inject(self, envelope: Envelope, message: bytes) -> str:
        """Queue a whole message held in memory (bounces, tests); returns its queue id."""
        writer = self.open_incoming(envelope)
        try:
            writer.write(message)
        except BaseException:
            writer.abort()
            raise
        return writer.commit()

    # --- wake-ups -----------------------------------------------------------------------------

    def add_listener(self, callback: Callable[[bytes], None]) -> None:
        """Register an in-process wake-up (the queue manager's ``notify``)."""
        self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[bytes], None]) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(callback)

    def wake(self, trigger: bytes = TRIGGER_INCOMING) -> None:
        """Tell the queue manager there is work: in-process if it runs here, else via the FIFO of every
        queue manager (one per shard: each looks for its own share of the work)."""
        if self._listeners:
            for callback in list(self._listeners):
                callback(trigger)
            return
        with self._trigger_lock:
            for name in self._triggers():
                self._write_trigger(name, trigger)

    def trigger_for(self, name: str) -> Path:
        """The wake-up FIFO ``public/<name>`` of one queue manager, made when missing."""
        path = self.root / "public" / name
        with contextlib.suppress(FileExistsError):
            os.mkfifo(path, 0o622)
        return path

    def _triggers(self) -> list[str]:
        """The FIFOs in ``public/``, listed again only when the directory changed (one stat a wake-up)."""
        try:
            stamp = os.stat(self._public).st_mtime_ns
        except OSError:
            return self._trigger_names
        if stamp != self._public_stamp:
            with contextlib.suppress(OSError), os.scandir(self._public) as it:
                self._trigger_names = sorted(e.name for e in it if e.name == "qmgr" or e.name.startswith("qmgr."))
                # A stamp as recent as the clock's granularity may hide a FIFO made just after it: list again.
                self._public_stamp = stamp if time.time_ns() - stamp > 1_000_000_000 else -1
        return self._trigger_names

    def _write_trigger(self, name: str, trigger: bytes) -> None:
        for _ in range(2):
            fd = self._trigger_fds.get(name, -1)
            if fd < 0:
                try:
                    fd = self._trigger_fds[name] = os.open(
                        f"{self._public}/{name}", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC
                    )
                except OSError:
                    return  # no manager is listening there; it scans when it starts
            try:
                os.write(fd, trigger)
                return
            except BlockingIOError:
                return  # the FIFO is full of wake-ups already
            except OSError:
                os.close(fd)
                del self._trigger_fds[name]

    # --- state directories --------------------------------------------------------------------

    def file(self, state: str, qid: str) -> str:
        """``path`` as a string, for the per-message hot path (a pathlib join costs more than the call)."""
        return f"{self._dir(state)}/{qid}"

    def path(self, state: str, qid: str) -> Path:
        return self.root / state / qid

    def ids(self, state: str) -> list[str]:
        """Queue ids in one state directory, oldest first."""
        with os.scandir(self.root / state) as it:
            return sorted(e.name for e in it if is_queue_id(e.name))

    def _dir(self, state: str) -> str:
        return self._dirs.get(state) or str(self.root / state)

    def move(self, qid: str, src: str, dst: str) -> bool:
        """Rename between states; False when the file is no longer in ``src``."""
        try:
            os.rename(f"{self._dir(src)}/{qid}", f"{self._dir(dst)}/{qid}")
            return True
        except FileNotFoundError:
            return False

    def locate(self, qid: str) -> str | None:
        for state in STATES:
            if self.path(state, qid).exists():
                return state
        return None

    def recover(self, owns: Callable[[str], bool] | None = None) -> int:
        """After a crash: put ``active/`` back in ``incoming/`` and drop dead writers' tmp files.

        ``owns`` limits it to one queue manager's shard: the other managers' active messages are
        theirs, being delivered."""
        moved = 0
        for qid in self.ids("active"):
            if owns is not None and not owns(qid):
                continue
            if self.move(qid, "active", "incoming"):
                moved += 1
        now = time.time()
        with os.scandir(self.root / "tmp") as it:
            for entry in it:
                _, _, pid = entry.name.partition(".")
                try:
                    age = now - entry.stat().st_mtime
                except FileNotFoundError:
                    continue
                if age > STALE_TMP_SECONDS or not (pid.isdigit() and _alive(int(pid))):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
        return moved

    # --- operator functions (postqueue / postsuper) -------------------------------------------

    def list_messages(self) -> list[QueueEntry]:
        entries = []
        for state in STATES:
            for qid in self.ids(state):
                entry = self._entry(state, qid)
                if entry is not None:
                    entries.append(entry)
        return entries

    def _entry(self, state: str, qid: str) -> QueueEntry | None:
        path = self.path(state, qid)
        try:
            with QueuedMessage(qid, path, writable=False) as msg:
                env = msg.envelope
                return QueueEntry(
                    qid, state, msg.size, env.arrival, env.sender, env.recipients,
                    env.last_reason, _mtime(path) if state == "deferred" else 0.0, env.attempts,
                )
        except FileNotFoundError:
            return None
        except CorruptQueueFile as exc:
            size = max(0, _size(path) - HEADER.size)
            return QueueEntry(qid, state, size, 0.0, "", [], f"corrupt: {exc}", 0.0, 0)

    def show(self, qid: str) -> QueueShow:
        """Envelope and message of one queued message (``postcat -q``)."""
        _check_id(qid)
        for state in STATES:
            try:
                with QueuedMessage(qid, self.path(state, qid), writable=False) as msg:
                    entry = self._entry(state, qid)
                    if entry is None:
                        continue
                    return QueueShow(entry, msg.envelope, msg.read_message())
            except FileNotFoundError:
                continue
        raise KeyError(qid)

    def flush(self) -> int:
        """Make every deferred message due now and wake the manager (``postqueue -f``)."""
        now = time.time()
        count = 0
        for qid in self.ids("deferred"):
            with contextlib.suppress(FileNotFoundError):
                os.utime(self.path("deferred", qid), (now, now))
                count += 1
        self.wake(TRIGGER_DEFERRED)
        return count

    def hold(self, qid: str) -> int:
        """Put messages on hold (``postsuper -h``); returns how many moved."""
        return sum(
            self.move(q, state, "hold")
            for q in self._select(qid)
            for state in ("incoming", "deferred", "active")
            if self.path(state, q).exists()
        )

    def release(self, qid: str) -> int:
        """Release held messages for delivery now (``postsuper -H``)."""
        count = sum(self.move(q, "hold", "incoming") for q in self._select(qid))
        if count:
            self.wake(TRIGGER_INCOMING)
        return count

    def delete(self, qid: str) -> int:
        """Delete messages in any state (``postsuper -d``)."""
        count = 0
        for q in self._select(qid):
            for state in STATES:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path(state, q))
                    count += 1
                    log.info("removed", qid=q)
        return count

    def _select(self, qid: str) -> Iterator[str]:
        if qid == "ALL":
            seen: set[str] = set()
            for state in STATES:
                for q in self.ids(state):
                    if q not in seen:
                        seen.add(q)
                        yield q
        else:
            _check_id(qid)
            yield qid


def _check_id(qid: str) -> None:
    if not is_queue_id(qid):
        raise ValueError(f"invalid queue id {qid!r}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM
    return True


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
