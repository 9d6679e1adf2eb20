"""Dovecot's imaptest scripted compliance suite against a real ``dovetail serve`` (as operators run it:
as root the workers drop privileges): every group must run and no command may fail.

imaptest is built from ``tools/imaptest`` (the upstream source, pinned, with its build script) into a
cache folder of /tmp the first time; it needs Dovecot's development headers (``dovecot-dev``).
"""

from __future__ import annotations

import hashlib
import re
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.master.harness import Master, cli, wait_for
from tests.support import require_tool

TOOLS = Path(__file__).resolve().parents[2] / "tools" / "imaptest"


def _build() -> tuple[Path, Path]:
    digest = hashlib.sha256((TOOLS / "imaptest-src.tar.gz").read_bytes()).hexdigest()[:12]
    build_dir = Path(tempfile.gettempdir()) / f"dovetail-imaptest-{digest}"
    wrapper = build_dir / "bin" / "imaptest"
    tests = build_dir / "imaptest" / "src" / "tests"
    if not wrapper.exists():
        require_tool("/usr/include/dovecot/imap-parser.h", "/usr/lib/dovecot/libdovecot.so.0", "autoreconf",
                     "libtoolize", "pkg-config", "make", "cc")
        out = subprocess.run(["bash", str(TOOLS / "build.sh"), str(build_dir)], capture_output=True, text=True,
                             timeout=600)
        assert out.returncode == 0, f"imaptest did not build: {out.stdout[-2000:]}{out.stderr[-2000:]}"
    return wrapper, tests


@pytest.fixture(scope="module")
def imaptest() -> tuple[Path, Path]:
    return _build()


def _imap_banner(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            return s.recv(100).startswith(b"* OK")
    except OSError:
        return False


@pytest.mark.timeout(900)
def test_imaptest_scripted_suite(imaptest, tmp_path) -> None:
    wrapper, tests = imaptest
    master = Master.create(tmp_path)
    for setting in ("imap.max_connections_per_user=1000", "imap.max_connections_per_ip=1000"):
        assert cli(master.data_dir, "config", "set", setting).returncode == 0
    master.start()
    wait_for(lambda: _imap_banner(master.imap_port), 30, "the IMAP greeting")
    try:
        out = subprocess.run(
            [str(wrapper), "host=127.0.0.1", f"port={master.imap_port}", "user=bob@acme.example", "pass=secret",
             "test=."], cwd=tests, capture_output=True, text=True, timeout=300)
    finally:
        log = master.log()
        master.stop()
        master.cleanup()
    report = out.stdout + out.stderr
    groups = re.search(r"(\d+) test groups: (\d+) failed, (\d+) skipped", report)
    base = re.search(r"base protocol: (\d+)/(\d+) individual commands failed", report)
    ext = re.search(r"extensions: (\d+)/(\d+) individual commands failed", report)
    assert groups and base and ext, report[-3000:]
    failures = "\n".join(re.findall(r"\*\*\* Test .*(?:\n - .*)*", report))[:6000] + "\n" + log[-3000:]
    assert groups.group(2) == "0" and groups.group(3) == "0", failures
    assert base.group(1) == "0" and int(base.group(2)) >= 450, failures
    assert ext.group(1) == "0" and int(ext.group(2)) >= 200, failures
