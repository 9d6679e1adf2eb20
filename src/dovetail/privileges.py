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
