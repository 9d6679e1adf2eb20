"""Start a real ``dovetail serve`` master on loopback ports and wait for it by polling its status file."""

from __future__ import annotations

import json
import os
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dovetail import config

from .. import clirun
from ..support import IN_CI

DOVETAIL = [sys.executable, "-m", "dovetail.cli.main"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float = 30.0, what: str = "condition"):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """One ``dovetail`` verb, in a process of its own (:mod:`tests.clirun`)."""
    return clirun.run(["--data-dir", str(data_dir), *args], timeout=120)


def check_can_drop_privileges() -> None:
    """As root, workers drop to ``dovetail``; that user must be able to read this Python."""
    import pytest

    if os.geteuid() != 0:
        return
    from dovetail.privileges import ensure_system_user, traversable_by

    uid, gid = ensure_system_user("dovetail")
    if not traversable_by(Path(os.__file__).resolve().parent, uid, gid):
        msg = f"{sys.executable} is not readable by the unprivileged service user (use a system-wide Python)"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)


class Master:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.smtp_port = free_port()
        self.imap_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "master.log"

    @classmethod
    def create(cls, root: Path, *, database_url: str | None = None, populate: bool = True) -> Master:
        """A data directory with one mailbox. ``root`` (pytest's tmp_path) is private to root, which the
        unprivileged workers could not enter, so the data directory goes into a fresh folder of /tmp.
        ``database_url``: a (cluster's) PostgreSQL database instead of SQLite; without ``populate`` the
        directory is left as it is (another node of the cluster fills it)."""
        check_can_drop_privileges()
        base = Path(tempfile.mkdtemp(prefix="dovetail-master-"))
        base.chmod(0o755)
        (root / "data-dir-location").write_text(str(base))
        data = base / "data"
        data.mkdir()
        (data / config.CONFIG_NAME).write_text(config.default_file_text())
        config.set_value(data, "server.hostname", "mx.test.example")
        config.set_value(data, "queue.minimal_backoff", "1s")
        if database_url is not None:
            config.set_value(data, "database.url", database_url)
        steps = [["init"]] + ([["tenant", "add", "acme"], ["domain", "add", "acme.example", "--tenant", "acme"],
                               ["mailbox", "add", "bob@acme.example", "--password", "secret"]] if populate else [])
        for args in steps:
            out = cli(data, *args)
            assert out.returncode == 0, out.stderr
        return cls(data)

    def start(self, *extra: str, env: dict[str, str] | None = None) -> None:
        self.logfile = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [*DOVETAIL, "--data-dir", str(self.data_dir), "serve", "--smtp", f"127.0.0.1:{self.smtp_port}",
             "--imap", f"127.0.0.1:{self.imap_port}", "--submission", "", "--http", "", *extra],
            stdout=self.logfile, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        self.wait_ready()

    def status(self) -> dict[str, Any]:
        try:
            return json.loads((self.data_dir / "run" / "status.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def worker_pids(self, service: str) -> list[int]:
        svc = self.status().get("services", {}).get(service, {})
        return [w["pid"] for w in svc.get("workers", []) if w.get("pid")]

    def wait_ready(self, timeout: float = 30.0) -> None:
        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"master exited with {self.proc.returncode}: {self.log()[-4000:]}")
            st = self.status()
            if not st:
                return False
            for svc in st["services"].values():
                if svc["enabled"] and not all(w["pid"] for w in svc["workers"]):
                    return False
            # Said once every service serves (its workers dropped privileges and listen).
            return "daemon started" in self.log() and self.smtp_banner_ok()

        wait_for(ready, timeout, "master ready")

    def smtp_banner_ok(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.smtp_port), timeout=2) as s:
                return s.recv(100).startswith(b"220")
        except OSError:
            return False

    def smtp(self) -> smtplib.SMTP:
        return smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=30)

    def maildir_files(self, local: str = "bob") -> list[Path]:
        box = self.data_dir / "mail" / "acme" / "acme.example" / local
        return [p for sub in ("new", "cur") for p in (box / sub).glob("*") if p.is_file()]

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=10)
        finally:
            self.logfile.close()

    def cleanup(self) -> None:
        import shutil

        shutil.rmtree(self.data_dir.parent, ignore_errors=True)


class RelaySink:
    """An SMTP server the master relays to: keeps (MAIL FROM, RCPT TOs, content) of each message.

    ``rcpt_replies`` maps a recipient to the reply its RCPT gets instead of 250 (a 4xx or 5xx line)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.lock = threading.Lock()
        self.rcpt_replies: dict[str, str] = {}

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: ANN001, ANN201, N802
        refusal = self.rcpt_replies.get(address.lower())
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: ANN001, ANN201, N802
        with self.lock:
            self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 2.0.0 Ok: queued as SINK1"

    def has(self, needle: bytes) -> bool:
        with self.lock:
            return any(needle in data for _, _, data in self.messages)


@contextmanager
def relay_sink() -> Iterator[tuple[RelaySink, int]]:
    """A :class:`RelaySink` listening on a free loopback port, for as long as the block runs."""
    from aiosmtpd.controller import Controller

    handler, port = RelaySink(), free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


def share_master_key(*masters: Master) -> None:
    """Give every node of a test cluster the same master key (``secrets/master.key``), the one secret an
    operator hands each node of a PostgreSQL cluster (``dovetail.vault``)."""
    import secrets as _secrets

    from dovetail.sealing import KEY_RELPATH
    from dovetail.vault import MASTER_RELPATH

    key = _secrets.token_hex(32)
    for master in masters:
        owner = (master.data_dir / KEY_RELPATH).stat()
        path = master.data_dir / MASTER_RELPATH
        path.write_text(key + "\n")
        path.chmod(0o600)
        os.chown(path, owner.st_uid, owner.st_gid)


def relay_everything_to(master: Master, port: int) -> None:
    """A default transport rule: all outbound mail goes to the relay sink on ``port``, in plaintext."""
    out = cli(master.data_dir, "transport", "set", "default", "*", "--relay", f"127.0.0.1:{port}", "--tls", "none")
    assert out.returncode == 0, out.stderr
