"""Writing one delivered message into a Maildir++ folder the way Dovecot and Postfix's virtual(8) do.

A file is created under ``tmp/`` with a unique name, filled with the message converted to LF line
endings, fdatasynced, hard-linked into ``new/`` as ``<name>,S=<size>,W=<vsize>`` (S = bytes on disk, W =
bytes with CRLF line endings, the sizes Dovecot reads from file names) and unlinked from ``tmp/``;
then ``new/`` is fsynced. The sizes are only known after writing, so they appear in the final name,
as Dovecot's own deliveries do. A link rather than a rename means an existing file can never be
replaced. The directory fsync is shared by the deliveries that linked into the same folder while
one ran (:mod:`.dirsync`). On any error the ``tmp/`` file is removed, so a reader never sees a
partial message. A message delivered with flags goes to ``cur/`` with its ``:2,`` info instead.

This is the fast path of delivery: no index, no lock, no uidlist; sessions pick the file up on
their next sync, exactly as they pick up Postfix's or Dovecot's deliveries.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import re
import socket
import time
from collections.abc import Iterable
from pathlib import Path

from dovetail.storage.api import DeliveryId

from .dirsync import sync_directory

SUBDIRS = ("cur", "new", "tmp")
_counter = itertools.count(1)
_QUEUE_ID = re.compile(r"[0-9A-Za-z]{1,64}")


@functools.cache
def _hostname() -> str:
    return socket.gethostname().replace("/", r"\057").replace(":", r"\072") or "localhost"


_made: set[str] = set()  # Maildirs this process has created or seen complete


def ensure_maildir(path: Path) -> None:
    """Create ``cur/ new/ tmp/`` (and parents) if missing; remembered, so a busy mailbox costs no mkdir."""
    key = str(path)
    if key in _made:
        return
    for sub in SUBDIRS:
        (path / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
    _made.add(key)


def unique_name() -> str:
    now = time.time()
    sec = int(now)
    usec = int((now - sec) * 1_000_000)
    return f"{sec}.M{usec}P{os.getpid()}Q{next(_counter)}.{_hostname()}"


def lf_chunks(stream: Iterable[bytes]) -> Iterable[bytes]:
    """Convert CRLF to LF across chunk boundaries; bare CRs are kept."""
    pending = b""
    for chunk in stream:
        data = pending + chunk
        if data.endswith(b"\r"):
            data, pending = data[:-1], b"\r"
        else:
            pending = b""
        yield data.replace(b"\r\n", b"\n")
    if pending:
        yield pending


def delivery_name(delivery: DeliveryId) -> str:
    """A Maildir base name that is the same on every attempt to deliver one queued recipient.

    ``<arrival>.V<qid>R<n>.<host>``: unique because queue ids are, and deterministic so that a
    delivery repeated after a crash (file written, queue not yet updated) finds the first copy in
    ``new/`` instead of writing a second one. Dovecot reads only ``,S=``, ``,W=`` and ``:2,`` of a
    name, so the middle part is ours to choose.
    """
    if not _QUEUE_ID.fullmatch(delivery.queue_id) or delivery.recipient < 0:
        raise ValueError(f"not a queue id and recipient index: {delivery.queue_id[:70]!r} {delivery.recipient}")
    return f"{int(delivery.arrival)}.V{delivery.queue_id}R{delivery.recipient}.{_hostname()}"


class AlreadyDelivered(Exception):
    """The same queued recipient was already written into this Maildir by an earlier attempt."""

    def __init__(self, path: Path) -> None:
        super().__init__(str(path))
        self.path = path


_WRITE_BATCH = 256 * 1024  # bytes gathered before one write(2): a small message is written in one call


def _write_all(fd: int, chunks: list[bytes]) -> None:
    if not chunks:
        return
    view = memoryview(chunks[0] if len(chunks) == 1 else b"".join(chunks))
    while view:
        view = view[os.write(fd, view):]


_written: dict[tuple[str, str], Path] = {}  # (maildir, base) -> path of this process's recent deliveries
_WRITTEN_KEPT = 4096


def _remember(maildir: Path, base: str, final: Path) -> None:
    if len(_written) >= _WRITTEN_KEPT:
        with contextlib.suppress(StopIteration, KeyError, RuntimeError):
            del _written[next(iter(_written))]
    _written[(str(maildir), base)] = final


def recently_written(maildir: Path, base: str) -> Path | None:
    """A copy named ``base`` this process wrote recently and that is still where it was put: one
    dictionary lookup, and one ``lstat`` only when there was such a copy."""
    known = _written.get((str(maildir), base))
    if known is not None and os.path.lexists(known):
        return known
    return None


def find_delivered(maildir: Path, base: str) -> Path | None:
    """An earlier copy named ``base`` in ``new/`` or (moved there by a reader) ``cur/``.

    A copy this process delivered recently is found with one ``stat``, not a scan of the folder,
    so looking up a fresh delivery costs the same in a mailbox of ten messages or of a million.
    """
    known = recently_written(maildir, base)
    if known is not None:
        return known
    for sub in ("new", "cur"):
        with contextlib.suppress(FileNotFoundError), os.scandir(maildir / sub) as it:
            for entry in it:
                name = entry.name
                if name.startswith(base) and name[len(base) : len(base) + 1] in (",", ":", ""):
                    return Path(entry.path)
    return None


def write_message(maildir: Path, chunks: Iterable[bytes], base: str | None = None, info: str | None = None) -> Path:
    """Deliver ``chunks`` (already LF-converted) into ``maildir/new`` (``cur/`` with ``:2,<info>``
    when ``info`` is given); returns the final path.

    With a deterministic ``base`` (see ``delivery_name``) a second delivery of the same bytes
    raises ``AlreadyDelivered`` instead of writing a duplicate.
    """
    ensure_maildir(maildir)
    base = base or unique_name()
    tmp = maildir / "tmp" / f"{base}.{os.getpid()}_{next(_counter)}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, 0o600)
    except FileNotFoundError:  # removed behind our back since we created it
        _made.discard(str(maildir))
        ensure_maildir(maildir)
        fd = os.open(tmp, flags, 0o600)
    sub = "new" if info is None else "cur"
    try:
        size = lines = 0
        try:
            pending: list[bytes] = []
            held = 0
            for chunk in chunks:
                pending.append(chunk)
                held += len(chunk)
                size += len(chunk)
                lines += chunk.count(b"\n")
                if held >= _WRITE_BATCH:
                    _write_all(fd, pending)
                    pending, held = [], 0
            _write_all(fd, pending)
            # The file is new: fdatasync flushes its data and what reading it back needs (its size and
            # blocks); the times it leaves out are not part of the message.
            os.fdatasync(fd)
        finally:
            os.close(fd)
        suffix = "" if info is None else f":2,{info}"
        final = maildir / sub / f"{base},S={size},W={size + lines}{suffix}"
        try:
            os.link(tmp, final)
        except FileExistsError:
            raise AlreadyDelivered(final) from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    os.unlink(tmp)
    _remember(maildir, base, final)
    sync_directory(maildir / sub)  # shared with the deliveries that linked into the folder meanwhile
    return final
