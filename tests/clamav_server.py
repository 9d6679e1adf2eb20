"""A private ClamAV for the tests: ``clamd`` and ``clamav-milter`` from Debian on loopback.

ClamAV's signature databases are distributed only by download (``freshclam``), which the test
machines cannot reach, so ``clamd`` loads one signature of its own: an extended (``.ndb``) body
signature for the EICAR test string, which is what the test needs and all it scans for.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

EICAR = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
SIGNATURE = "Dovetail.Test.EICAR"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ClamavMilter:
    """``with ClamavMilter(root) as c: c.milter`` (``inet:127.0.0.1:PORT``)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = _free_port()
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def milter(self) -> str:
        return f"inet:127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> ClamavMilter:
        r = self.root
        (r / "db").mkdir(parents=True, exist_ok=True)
        marker = b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE"
        (r / "db" / "dovetail-test.ndb").write_text(f"{SIGNATURE}:0:*:{marker.hex()}\n")
        sock = r / "clamd.sock"
        (r / "clamd.conf").write_text(f"LocalSocket {sock}\nDatabaseDirectory {r / 'db'}\nForeground yes\n"
                                      f"LogFile {r / 'clamd.log'}\nTemporaryDirectory {r}\n")
        (r / "milter.conf").write_text(
            f"MilterSocket inet:{self.port}@127.0.0.1\nClamdSocket unix:{sock}\nForeground yes\n"
            f"LogFile {r / 'milter.log'}\nOnInfected Reject\nRejectMsg Virus found: %v\nOnFail Defer\n"
            f"AddHeader Replace\nTemporaryDirectory {r}\n")
        deadline = time.monotonic() + timeout
        self._spawn([shutil.which("clamd") or "/usr/sbin/clamd", "-c", str(r / "clamd.conf")], "clamd")
        self._wait(lambda: sock.exists(), deadline, "clamd")
        self._spawn([shutil.which("clamav-milter") or "/usr/sbin/clamav-milter", "-c", str(r / "milter.conf")],
                    "milter")
        self._wait(self._listening, deadline, "clamav-milter")
        return self

    def _spawn(self, args: list[str], name: str) -> None:
        out = (self.root / f"{name}.out").open("wb")
        self.procs.append(subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True))

    def _listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def _wait(self, ready, deadline: float, what: str) -> None:  # noqa: ANN001
        while time.monotonic() < deadline:
            for proc in self.procs:
                if proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"{what}: a ClamAV process exited with {proc.returncode}")
            if ready():
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{what} not ready in time")

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
        self.procs = []

    def __enter__(self) -> ClamavMilter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
