"""Least privilege: workers drop to an unprivileged user; they die with the master.

Only the master keeps root (to bind ports below 1024); every process that reads network input
runs as ``server.user``. ``PR_SET_PDEATHSIG`` makes the kernel kill a worker whose master died,
so no orphan keeps serving with a stale config.
"""

from __future__ import annotations

import ctypes
import grp
import os
import pwd
import signal
import stat
import subprocess
from pathlib import Path

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent exits (Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def lookup_user(name: str) -> tuple[int, int] | None:
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        return None
    return pw.pw_uid, pw.pw_gid


def ensure_system_user(name: str) -> tuple[int, int]:
    """Create the unprivileged system user (as root, at init) if it does not exist."""
    found = lookup_user(name)
    if found:
        return found
    subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                    "--shell", "/usr/sbin/nologin", "--user-group", name], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    found = lookup_user(name)
    assert found is not None
    return found


def traversable_by(path: Path, uid: int, gid: int) -> bool:
    """Whether ``uid``/``gid`` can reach ``path`` (search permission on every directory above it)."""
    return first_closed(path, uid, gid) is None


def first_closed(path: Path, uid: int, gid: int) -> Path | None:
    """The outermost directory on the way to ``path`` that ``uid``/``gid`` cannot search, or None."""
    for part in [*reversed(path.parents), path]:
        try:
            st = part.stat()
        except OSError:
            return part
        mode = st.st_mode
        if st.st_uid == uid:
            ok = mode & 0o100
        elif st.st_gid == gid:
            ok = mode & 0o010
        else:
            ok = mode & 0o001
        if not ok:
            return part
    return None


def check_user(user: str) -> tuple[int, int]:
    """The service user's ids, refusing a user that could not even load Python after the drop."""
    ids = lookup_user(user)
    if ids is None:
        raise RuntimeError(f"server.user {user!r} does not exist (run `dovetail init` as root to create it)")
    uid, gid = ids
    stdlib = Path(os.__file__).resolve().parent
    if not traversable_by(stdlib, uid, gid):
        raise RuntimeError(f"the Python installation ({stdlib}) is not readable by server.user {user!r}; "
                           "install Dovetail with a system-wide Python (e.g. /usr/bin/python3)")
    return uid, gid


def drop_privileges(user: str) -> None:
    """Become ``user`` (and its groups) for good; a no-op unless running as root."""
    if os.geteuid() != 0:
        return
    uid, gid = check_user(user)
    os.setgroups([g.gr_gid for g in grp.getgrall() if user in g.gr_mem] or [gid])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.geteuid() == 0 or os.getuid() == 0:
        raise RuntimeError("failed to drop root privileges")


def chown_tree(root: Path, uid: int, gid: int, skip: tuple[str, ...] = ()) -> None:
    """Give the mutable parts of the data directory to the service user."""
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        if any(rel == s or rel.startswith(s + os.sep) for s in skip):
            dirnames[:] = []
            continue
        os.chown(dirpath, uid, gid)
        for f in filenames:
            os.chown(os.path.join(dirpath, f), uid, gid, follow_symlinks=False)


# --- private files the service user reads -------------------------------------------------------


def service_owner(user: str) -> tuple[int, int] | None:
    """Who must own a private file made now: ``user``'s ids when running as root, else None (the
    file is the running user's, who is then the one that serves)."""
    if os.geteuid() != 0:
        return None
    return lookup_user(user)


def private_dir(path: Path, owner: tuple[int, int] | None, mode: int = 0o700) -> None:
    """Make (or keep) ``path`` a folder only its owner enters; as root, that owner is ``owner``."""
    path.mkdir(parents=True, exist_ok=True, mode=mode)
    st = path.stat()
    if st.st_mode & 0o7777 != mode and (owner is not None or st.st_uid == os.geteuid()):  # else: not ours
        os.chmod(path, mode)
    if owner is not None and (st.st_uid, st.st_gid) != owner:
        os.chown(path, *owner)


def write_private_file(path: Path, data: bytes, owner: tuple[int, int] | None) -> None:
    """Write a secret 0600 atomically (tmp, fsync, rename) that ``owner`` (the service user, when root
    writes it) can read: owner set before the rename, so no reader ever sees it root's."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        if owner is not None:
            os.fchown(fd, *owner)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def unreadable_by(path: Path, uid: int, gid: int) -> str | None:
    """Why ``uid``/``gid`` could not read the file ``path`` (by its owner and mode bits), or None."""
    closed = first_closed(path.parent, uid, gid)
    if closed is not None:
        return f"{path}: Permission denied (cannot enter {closed})"
    try:
        st = path.stat()
    except OSError as exc:
        return f"{path}: {exc.strerror}"
    if uid == 0:
        return None
    bit = 0o400 if st.st_uid == uid else 0o040 if st.st_gid == gid else 0o004
    if st.st_mode & bit:
        return None
    return f"{path}: Permission denied (owner {_user_name(st.st_uid)}, mode {st.st_mode & 0o7777:04o})"


def make_private(path: Path, owner: tuple[int, int]) -> list[str]:
    """Give the file or folder ``path`` to ``owner``, readable by it and no one else (0600 / 0700);
    returns what changed, in words (empty when nothing did)."""
    st = path.lstat()
    changes = []
    if (st.st_uid, st.st_gid) != owner:
        os.chown(path, *owner, follow_symlinks=False)
        changes.append(f"owner {_user_name(st.st_uid)} -> {_user_name(owner[0])}")
    want = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600
    if st.st_mode & 0o7777 != want:
        os.chmod(path, want)
        changes.append(f"mode {st.st_mode & 0o7777:04o} -> {want:04o}")
    return changes


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
