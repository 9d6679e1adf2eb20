"""Writing one delivered message into a Maildir++ folder the way Dovecot and Postfix's virtual(8) do.

A file is created under ``tmp/``, filled with the message converted to LF line endings, fdatasynced,
hard-linked into ``new/`` as ``<name>,S=<size>,W=<vsize>`` (S = bytes on disk, W = bytes with CRLF
line endings, the sizes Dovecot reads from file names); then ``new/`` is fsynced. On Linux the file
is made with ``O_TMPFILE``: it has no name in ``tmp/`` at all until ``linkat`` gives it its one name in
``new/`` (no tmp/ entry to create and unlink, and a crash leaves no stray file: the kernel frees an
unnamed file). Where the filesystem refuses ``O_TMPFILE`` the file gets a unique name in ``tmp/``,
linked into ``new/`` and unlinked from ``tmp/``, as Dovecot and Postfix do; readers see the same
Maildir either way. The sizes are only known after writing, so they appear in the final name,
as Dovecot's own deliveries do. A link rather than a rename means an existing file can never be
replaced. The directory fsync is shared by the deliveries that linked into the same folder while
one ran (:mod:`.dirsync`). On any error the ``tmp/`` file is removed (an unnamed one vanishes with
its descriptor), so a reader never sees a partial message. A message delivered with flags goes to
``cur/`` with its ``:2,`` info instead.

This is the fast path of delivery: no index, no lock, no uidlist; sessions pick the file up on
their next sync, exactly as they pick up Postfix's or Dovecot's deliveries.
"""

from __future__ import annotations

import contextlib
import errno
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
_IOV_MAX = 1024  # buffers per writev(2) (Linux's IOV_MAX)


def _write_all(fd: int, chunks: list[bytes]) -> None:
    """Write ``chunks`` with one ``writev(2)`` (no joined copy of the message), looping on a short write."""
    if not chunks:
        return
    if len(chunks) == 1 or not hasattr(os, "writev"):
        view = memoryview(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        while view:
            view = view[os.write(fd, view):]
        return
    for start in range(0, len(chunks), _IOV_MAX):
        part = chunks[start:start + _IOV_MAX]
        left = sum(len(c) for c in part)
        written = os.writev(fd, part)
        if written < left:  # short write (a signal, a full disk): finish the rest buffer by buffer
            rest = memoryview(b"".join(part))[written:]
            while rest:
                rest = rest[os.write(fd, rest):]


# O_TMPFILE (Linux ≥ 3.11 on ext4, xfs, btrfs, tmpfs): the message's file is created without a name in
# tmp/ and gets its one name in new/ by linkat(2) through /proc/self/fd, which saves creating and
# removing the tmp/ entry (two directory updates and the unlink). Where the kernel or the filesystem
# refuses it the classic tmp/ name + link + unlink is used, remembered per tmp/ folder.
_O_TMPFILE = getattr(os, "O_TMPFILE", 0)
_tmpfile_refused: set[str] = set()  # tmp/ folders where O_TMPFILE failed: no second try
_TMPFILE_UNSUPPORTED = (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOTSUP)
_proc_fd: tuple[int, int] | None = None  # (pid, descriptor of /proc/<pid>/fd): a fork opens its own


def tmpfile_supported(tmp_dir: str) -> bool:
    """Whether deliveries into ``tmp_dir`` may use O_TMPFILE (not yet refused there, and /proc mounted)."""
    return bool(_O_TMPFILE) and tmp_dir not in _tmpfile_refused and _proc_fd_dir() is not None


def _proc_fd_dir() -> int | None:
    """This process's ``/proc/self/fd`` as a directory descriptor: ``linkat`` names an unnamed file from it
    with AT_SYMLINK_FOLLOW (Python's ``os.link`` asks for that only with a ``src_dir_fd``)."""
    global _proc_fd
    pid = os.getpid()
    if _proc_fd is not None and _proc_fd[0] == pid:
        return _proc_fd[1] if _proc_fd[1] >= 0 else None
    try:
        fd = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        _proc_fd = (pid, -1)
        return None
    _proc_fd = (pid, fd)
    return fd


def _open_unnamed(tmp_dir: str) -> int | None:
    """A new file without a name in ``tmp_dir``, or None where O_TMPFILE is not available there."""
    if not tmpfile_supported(tmp_dir):
        return None
    try:
        return os.open(tmp_dir, _O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno not in _TMPFILE_UNSUPPORTED:
            raise
        _tmpfile_refused.add(tmp_dir)
        return None


def _link_unnamed(fd: int, tmp_dir: str, final: Path) -> None:
    """Give the unnamed file ``fd`` its name ``final``; where /proc refuses the link (a hardened /proc),
    copy it to a named file in ``tmp_dir`` and link that, and use named files there from now on."""
    proc = _proc_fd_dir()
    if proc is not None:
        try:
            os.link(str(fd), final, src_dir_fd=proc, follow_symlinks=True)
            return
        except (FileExistsError, FileNotFoundError):
            raise
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EPERM, errno.EXDEV):
                raise
    _tmpfile_refused.add(tmp_dir)
    tmp = f"{tmp_dir}/{final.name.split(',', 1)[0]}.{os.getpid()}_{next(_counter)}"
    out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        try:
            size = os.fstat(fd).st_size
            offset = 0
            while offset < size:
                sent = os.sendfile(out, fd, offset, size - offset)
                if sent == 0:
                    break
                offset += sent
            os.fdatasync(out)
        finally:
            os.close(out)
        os.link(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


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

    Order, whichever way the file is made: data written and fdatasynced, then the one link into
    ``new/``, then ``new/`` fsynced; a reader never sees a partial message, and when this returns
    the message is on stable storage.
    """
    ensure_maildir(maildir)
    base = base or unique_name()
    tmp_dir = f"{maildir}/tmp"
    try:
        fd = _open_unnamed(tmp_dir)
    except FileNotFoundError:  # removed behind our back since we created it
        _made.discard(str(maildir))
        ensure_maildir(maildir)
        fd = _open_unnamed(tmp_dir)
    tmp: str | None = None
    if fd is None:
        tmp = f"{tmp_dir}/{base}.{os.getpid()}_{next(_counter)}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        try:
            fd = os.open(tmp, flags, 0o600)
        except FileNotFoundError:  # removed behind our back since we created it
            _made.discard(str(maildir))
            ensure_maildir(maildir)
            fd = os.open(tmp, flags, 0o600)
    sub = "new" if info is None else "cur"
    try:
        try:
            size, lines = _fill(fd, chunks)
            suffix = "" if info is None else f":2,{info}"
            final = maildir / sub / f"{base},S={size},W={size + lines}{suffix}"
            try:
                if tmp is not None:
                    os.link(tmp, final)
                else:
                    _link_unnamed(fd, tmp_dir, final)
            except FileExistsError:
                raise AlreadyDelivered(final) from None
        finally:
            os.close(fd)
    except BaseException:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise
    if tmp is not None:
        os.unlink(tmp)
    _remember(maildir, base, final)
    sync_directory(maildir / sub)  # shared with the deliveries that linked into the folder meanwhile
    return final


def _fill(fd: int, chunks: Iterable[bytes]) -> tuple[int, int]:
    """Write the message and fdatasync it; returns its size and line count."""
    size = lines = 0
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
    return size, lines
