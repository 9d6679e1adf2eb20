"""Writing one message into a Maildir++ folder the way Dovecot and Postfix's virtual(8) do.

A file is created under ``tmp/`` with a unique name ``<sec>.M<usec>P<pid>Q<n>.<host>``, filled with
the message converted to LF line endings, fsynced, hard-linked into ``new/`` as
``<name>,S=<size>,W=<vsize>`` (S = bytes on disk, W = bytes with CRLF line endings, the sizes Dovecot
reads from file names) and unlinked from ``tmp/``; then ``new/`` is fsynced. The sizes are only
known after writing, so they appear in the ``new/`` name, as Dovecot's own deliveries do. A link
rather than a rename means an existing file can never be replaced. On any error the ``tmp/`` file is
removed, so a reader never sees a partial message.

Quota usage is the sum of ``S=`` sizes (or ``stat`` sizes for names without one) under ``cur/`` and
``new/`` of the Maildir and of its ``.Sub`` folders. It is cached in memory per directory together
with the directory's mtime, so a check rescans only directories that changed since the last one.
This stands in for Dovecot's ``maildirsize`` file, which needs a lock shared with the IMAP side.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import re
import socket
import threading
import time
from collections.abc import Iterable
from pathlib import Path

SUBDIRS = ("cur", "new", "tmp")
_SIZE_RE = re.compile(r",S=(\d+)")
_counter = itertools.count(1)


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


def delivery_name(arrival: float, queue_id: str, recipient_index: int) -> str:
    """A Maildir base name that is the same on every attempt to deliver one queued recipient.

    ``<arrival>.V<qid>R<n>.<host>``: unique because queue ids are, and deterministic so that a
    delivery repeated after a crash (file written, queue not yet updated) finds the first copy in
    ``new/`` instead of writing a second one. Dovecot reads only ``,S=``, ``,W=`` and ``:2,`` of a
    name, so the middle part is ours to choose.
    """
    return f"{int(arrival)}.V{queue_id}R{recipient_index}.{_hostname()}"


class AlreadyDelivered(Exception):
    """The same queued recipient was already written into this Maildir by an earlier attempt."""

    def __init__(self, path: Path) -> None:
        super().__init__(str(path))
        self.path = path


_written: dict[tuple[str, str], Path] = {}  # (maildir, base) -> new/ path of this process's recent deliveries
_WRITTEN_KEPT = 4096


def _remember(maildir: Path, base: str, final: Path) -> None:
    if len(_written) >= _WRITTEN_KEPT:
        with contextlib.suppress(StopIteration, KeyError, RuntimeError):
            del _written[next(iter(_written))]
    _written[(str(maildir), base)] = final


def find_delivered(maildir: Path, base: str) -> Path | None:
    """An earlier copy named ``base`` in ``new/`` or (moved there by a reader) ``cur/``.

    A copy this process delivered recently is found with one ``stat``, not a scan of the folder,
    so looking up a fresh delivery costs the same in a mailbox of ten messages or of a million.
    """
    known = _written.get((str(maildir), base))
    if known is not None and os.path.lexists(known):
        return known
    for sub in ("new", "cur"):
        with contextlib.suppress(FileNotFoundError), os.scandir(maildir / sub) as it:
            for entry in it:
                if entry.name.startswith(base + ","):
                    return Path(entry.path)
    return None


def write_message(maildir: Path, chunks: Iterable[bytes], base: str | None = None) -> Path:
    """Deliver ``chunks`` (already LF-converted) into ``maildir/new``; returns the final path.

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
    try:
        fh = os.fdopen(fd, "wb", buffering=65536)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    try:
        size = 0
        lines = 0
        with fh:
            for chunk in chunks:
                fh.write(chunk)
                size += len(chunk)
                lines += chunk.count(b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        final = maildir / "new" / f"{base},S={size},W={size + lines}"
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
    dfd = os.open(maildir / "new", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return final


class QuotaCache:
    """Mailbox usage in bytes, recomputed per directory only when its mtime changes."""

    def __init__(self) -> None:
        self._dirs: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()

    def usage(self, maildir: Path) -> int:
        folders = [maildir]
        with contextlib.suppress(FileNotFoundError), os.scandir(maildir) as it:
            folders += [
                Path(e.path)
                for e in it
                if e.name.startswith(".") and e.name not in (".", "..") and e.is_dir(follow_symlinks=False)
            ]
        return sum(self._dir_usage(folder / sub) for folder in folders for sub in ("cur", "new"))

    def _dir_usage(self, path: Path) -> int:
        key = str(path)
        try:
            mtime = os.stat(path).st_mtime_ns
        except FileNotFoundError:
            return 0
        with self._lock:
            cached = self._dirs.get(key)
        if cached and cached[0] == mtime:
            return cached[1]
        total = 0
        with contextlib.suppress(FileNotFoundError), os.scandir(path) as it:
            for entry in it:
                match = _SIZE_RE.search(entry.name)
                if match:
                    total += int(match.group(1))
                else:
                    with contextlib.suppress(FileNotFoundError):
                        total += entry.stat(follow_symlinks=False).st_size
        with self._lock:
            self._dirs[key] = (mtime, total)
        return total
