"""A tree of Maildir++ roots copied between nodes as it is on disk, so that nothing a client sees changes.

The Maildir is the interface (DESIGN.md, contract 2), so it is also the wire format of a tenant move:
message files keep their names (``:2,<flags>``, ``,S=<size>``), ``dovecot-uidlist`` keeps UIDVALIDITY,
UIDNEXT and every UID, ``dovecot-keywords`` the keyword letters, and our index (modseqs, the expunge
history) goes along, so an IMAP client of the new home sees the same mailbox and does not resync.

An export is a tar stream (PAX, so modification times keep their fractions: the internal date of a
message is its file's mtime). Its first member is the manifest: every file of the tree with its size.
Then the files the receiver lacks: a message file (under ``cur/`` or ``new/``) is never rewritten under
its name, so one the receiver already holds with the same size is skipped; every other file (uidlist,
keywords, index, subscriptions...) is small and rewritten in place, so it is always sent. The receiver
then deletes what the manifest no longer lists (expunged messages, renamed flags). Running the export
twice — a first pass while mail flows, a final one with the tenant paused — moves each message once.

Not copied: ``tmp/`` (deliveries in flight), dot-locks, the search text store (a cache, made again on
first need), and SQLite's ``-wal``/``-shm`` files: a SQLite
file is copied through SQLite's backup API, which gives a consistent snapshot while sessions write.

Hand-written rather than rsync: the receiver is another node reached over our own authenticated
endpoint, with no shell access between nodes, and the rule above (which files are immutable) is the
Maildir's, not a general one.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sqlite3
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO

MANIFEST = ".dovetail-manifest"
PARTIAL = ".part"  # a file being received; removed by the next import into the same tree
_SKIP_SUFFIXES = (".lock", "-wal", "-shm", "-journal", PARTIAL)
_CACHES = ("dovetail-search.sqlite",)  # maildir.searchtext's store: remade where it is needed, never moved
CHUNK = 256 * 1024


class TransferError(Exception):
    """A stream that is not a tree export, or names a path outside the tree."""


def _message_file(rel: str) -> bool:
    parts = rel.split("/")
    return len(parts) >= 2 and parts[-2] in ("cur", "new")


def tree_files(root: Path) -> dict[str, int]:
    """Every file of the tree that a transfer carries, ``relative/path`` → size."""
    found: dict[str, int] = {}
    if not root.is_dir():
        return found
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if d != "tmp")
        for name in sorted(filenames):
            if name.endswith(_SKIP_SUFFIXES) or name == MANIFEST or name in _CACHES:
                continue
            path = here / name
            try:
                st = path.lstat()
            except FileNotFoundError:
                continue  # renamed by a session meanwhile: the next pass sees its new name
            if not os.path.isfile(path) or path.is_symlink():
                continue
            found[path.relative_to(root).as_posix()] = st.st_size
    return found


def _snapshot(path: Path) -> bytes:
    """A consistent copy of a SQLite file while others may write it (the backup API)."""
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "copy.sqlite"
        src = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            dst = sqlite3.connect(target)
            try:
                src.backup(dst)
            finally:
                dst.close()
        finally:
            src.close()
        return target.read_bytes()


class _Pipe(io.RawIOBase):
    """A writable file whose bytes are collected for the generator that drains it."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:  # noqa: ANN001 - bytes-like, as io expects
        self.chunks.append(bytes(b))
        return len(b)

    def take(self) -> bytes:
        data = b"".join(self.chunks)
        self.chunks.clear()
        return data


def export_tree(root: Path, have: dict[str, int] | None = None) -> Iterator[bytes]:
    """The tar stream of ``root`` for a receiver that already holds ``have`` (path → size).

    Chunks are yielded as the files are read, so a large tree never sits in memory; the stream is
    produced lazily (a blocking generator: iterate it in a thread).
    """
    have = have or {}
    files = tree_files(root)
    send = [rel for rel, size in files.items() if not (_message_file(rel) and have.get(rel) == size)]
    manifest = json.dumps({"files": files, "dirs": sorted(_maildir_dirs(root)),
                           "send": len(send), "bytes": sum(files[r] for r in send)}).encode()
    pipe = _Pipe()
    with tarfile.open(fileobj=pipe, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(MANIFEST)
        info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest))
        yield pipe.take()
        for rel in send:
            path = root / rel
            try:
                if rel.endswith(".sqlite"):
                    data = _snapshot(path)
                    stream: BinaryIO = io.BytesIO(data)
                    size = len(data)
                else:
                    stream = open(path, "rb")  # noqa: SIM115 - closed below
                    size = os.fstat(stream.fileno()).st_size
                mtime = path.stat().st_mtime
            except (FileNotFoundError, sqlite3.Error):
                continue  # gone since the listing: the manifest's next pass drops it at the receiver
            with stream:
                info = tarfile.TarInfo(rel)
                info.size = size
                info.mtime = mtime  # type: ignore[assignment]  # PAX keeps the fraction
                info.mode = 0o600
                tar.addfile(info, stream)
            yield pipe.take()
    yield pipe.take()


def _maildir_dirs(root: Path) -> set[str]:
    """Folders of the tree (empty Maildirs included: an empty mailbox still exists for IMAP)."""
    out: set[str] = set()
    if not root.is_dir():
        return out
    for dirpath, dirnames, _ in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != "tmp"]
        rel = Path(dirpath).relative_to(root).as_posix()
        if rel != ".":
            out.add(rel)
            if Path(dirpath).name == "cur":
                out.add(PurePosixPath(rel).parent.joinpath("tmp").as_posix())  # a Maildir needs its tmp/
    return out


def _safe(root: Path, rel: str) -> Path:
    pure = PurePosixPath(rel)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts or rel.endswith(_SKIP_SUFFIXES):
        raise TransferError(f"refused path {rel!r} in a tree export")
    return root.joinpath(*pure.parts)


def discard_partial(root: Path) -> None:
    """Remove files a killed import left half written (they carry the ``.part`` suffix)."""
    if root.is_dir():
        for dirpath, _, filenames in os.walk(root):
            for name in filenames:
                if name.endswith(PARTIAL):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(dirpath, name))


def import_tree(stream: BinaryIO, root: Path, progress: Callable[[int, int, int], None] | None = None,
                after_file: Callable[[int], None] | None = None) -> dict[str, int]:
    """Apply an export of :func:`export_tree` to ``root`` and return its manifest's files.

    Each file is written under a ``.part`` name, fsynced and renamed into place, so a kill leaves whole
    files and ``.part`` leftovers only (removed first thing by the next import). Files the manifest does
    not list are deleted at the end; folders are fsynced. ``progress(files_done, files_total, bytes)``
    follows the transfer; ``after_file(n)`` is called after each file.
    """
    try:
        return _import(stream, root, progress, after_file)
    except tarfile.TarError as exc:
        raise TransferError(f"not a tree export: {exc}") from None


def _import(stream: BinaryIO, root: Path, progress: Callable[[int, int, int], None] | None,
            after_file: Callable[[int], None] | None) -> dict[str, int]:
    root.mkdir(parents=True, exist_ok=True)
    discard_partial(root)
    manifest: dict | None = None
    done = 0
    touched: set[Path] = set()
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            if manifest is None:
                if member.name != MANIFEST or not member.isfile():
                    raise TransferError("not a tree export: it does not start with its manifest")
                extracted = tar.extractfile(member)
                assert extracted is not None
                manifest = json.loads(extracted.read())
                for rel in manifest["dirs"]:
                    _safe(root, rel).mkdir(parents=True, exist_ok=True)
                if progress:
                    progress(0, manifest["send"], 0)
                continue
            if not member.isfile():
                raise TransferError(f"refused member {member.name!r}: only files travel")
            target = _safe(root, member.name)
            target.parent.mkdir(parents=True, exist_ok=True)
            part = target.with_name(target.name + PARTIAL)
            source = tar.extractfile(member)
            assert source is not None
            with open(part, "wb") as out:
                while chunk := source.read(CHUNK):
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.utime(part, (member.mtime, member.mtime))
            if target.name.endswith(".sqlite"):
                for suffix in ("-wal", "-shm"):  # a log of the replaced copy must not be replayed into this one
                    Path(str(target) + suffix).unlink(missing_ok=True)
            os.replace(part, target)
            touched.add(target.parent)
            done += 1
            if progress:
                progress(done, manifest["send"], member.size)
            if after_file:
                after_file(done)
    if manifest is None:
        raise TransferError("empty stream: not a tree export")
    listed = set(manifest["files"])
    for rel in tree_files(root):
        if rel not in listed:
            path = _safe(root, rel)
            path.unlink(missing_ok=True)
            touched.add(path.parent)
            if rel.endswith(".sqlite"):
                for suffix in ("-wal", "-shm"):
                    Path(str(path) + suffix).unlink(missing_ok=True)
    for rel in sorted(set(_maildir_dirs(root)) - set(manifest["dirs"]), key=len, reverse=True):
        with contextlib.suppress(OSError):  # a folder deleted at the source since the last pass
            _safe(root, rel).rmdir()
    for folder in touched:
        _fsync_dir(folder)
    return dict(manifest["files"])


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
