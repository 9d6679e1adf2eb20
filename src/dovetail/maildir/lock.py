"""Dovecot-compatible dotlocks (``dovecot-uidlist.lock``): O_EXCL create, stale after a timeout.

Dovecot considers a dotlock stale when it has not been touched for two minutes or when it names a
process of this host that is gone; both sides use the same rule, so either may break the other's
stale lock and neither breaks a live one.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from dovetail.storage.api import MailboxInUse

STALE_SECONDS = 120.0
WAIT_SECONDS = 30.0


def _stale(path: Path) -> bool:
    try:
        st = path.stat()
        content = path.read_bytes()[:200].decode("ascii", "replace")
    except OSError:
        return False
    if time.time() - st.st_mtime > STALE_SECONDS:
        return True
    pid_s, _, host = content.strip().partition(":")
    if pid_s.isdigit() and host == socket.gethostname():
        try:
            os.kill(int(pid_s), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
    return False


class DotLock:
    """``with DotLock(path):`` holds ``path`` (e.g. ``.../dovecot-uidlist.lock``)."""

    def __init__(self, path: Path, wait: float = WAIT_SECONDS) -> None:
        self.path = path
        self.wait = wait
        self.held = False

    def acquire(self) -> None:
        deadline = time.monotonic() + self.wait
        delay = 0.002
        while True:
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                if _stale(self.path):
                    try:
                        self.path.unlink()
                    except FileNotFoundError:
                        pass
                    continue
                if time.monotonic() > deadline:
                    raise MailboxInUse(f"timeout waiting for {self.path.name}") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.1)
                continue
            self.held = True
            try:
                os.write(fd, f"{os.getpid()}:{socket.gethostname()}".encode())
            except OSError:
                pass  # a full disk: the lock is the file itself, empty it goes stale by its age alone
            finally:
                os.close(fd)
            return

    def release(self) -> None:
        if self.held:
            self.held = False
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass

    def __enter__(self) -> DotLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
