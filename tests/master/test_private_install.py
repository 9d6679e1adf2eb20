"""Dovetail installed in a folder only root can enter (a clone in /root or a ``mktemp -d``), run as root.

Workers drop to the service user, which cannot read that folder. With only the source there and the
virtualenv elsewhere (``pip install -e`` of a private checkout), the master loads the code, templates
and static files before it forks, so every service works. With the whole virtualenv there (what
``make run`` in ``/root/dovetail`` creates), the libraries cannot be loaded ahead: ``serve`` refuses
at start, in one line naming the folder, instead of a crash loop behind "daemon started".
"""

from __future__ import annotations

import imaplib
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import dovetail

from .harness import Master, free_port, wait_for

SOURCE = Path(dovetail.__file__).resolve().parents[1]  # the src/ folder holding the package
MSG = "From: alice@ext.example\r\nTo: bob@acme.example\r\nSubject: private\r\n\r\nhello\r\n"
NOT_FOR_SERVICES = {"pip", "setuptools", "playwright", "schemathesis", "hypothesis", "graphql", "_pytest",
                    "pytest", "__pycache__"}

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="privileges are dropped only when started as root")


@pytest.fixture
def private_dir() -> Iterator[Path]:
    """A fresh folder only root can enter, as ``mktemp -d`` makes it."""
    path = Path(tempfile.mkdtemp(prefix="dovetail-private-"))
    assert (path.stat().st_mode & 0o777) == 0o700
    yield path
    shutil.rmtree(path, ignore_errors=True)


def copy_source(into: Path) -> Path:
    src = into / "checkout" / "src"
    shutil.copytree(SOURCE / "dovetail", src / "dovetail", ignore=shutil.ignore_patterns("__pycache__"))
    return src


def python_sees(python: str, env: dict[str, str]) -> str:
    out = subprocess.run([python, "-c", "import dovetail; print(dovetail.__file__)"], env={**os.environ, **env},
                         capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.strip()


def test_source_in_a_private_folder_serves_smtp_imap_and_web(private_dir: Path, tmp_path: Path) -> None:
    src = copy_source(private_dir)
    env = {"PYTHONPATH": str(src)}
    assert python_sees(sys.executable, env).startswith(str(src))  # the private copy is what runs
    m = Master.create(tmp_path)
    http = free_port()
    try:
        m.start("--http", f"127.0.0.1:{http}", env=env)
        wait_for(lambda: "daemon started" in m.log(), 30, "daemon started")

        with m.smtp() as s:
            s.sendmail("alice@ext.example", ["bob@acme.example"], MSG)
        wait_for(m.maildir_files, 30, "delivery into the Maildir")

        imap = imaplib.IMAP4("127.0.0.1", m.imap_port, timeout=30)
        try:
            assert imap.login("bob@acme.example", "secret")[0] == "OK"
            status, data = imap.select("INBOX")
            assert status == "OK" and int(data[0]) == 1
        finally:
            imap.logout()

        with urllib.request.urlopen(f"http://127.0.0.1:{http}/login", timeout=30) as page:
            assert page.status == 200 and b"/static/app.css" in page.read()
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/static/app.css", timeout=30) as css:
            assert css.read() == (SOURCE / "dovetail" / "web" / "static" / "app.css").read_bytes()

        log = m.log()
        assert "worker died" not in log and "cannot start" not in log and "Traceback" not in log, log[-3000:]
    finally:
        m.stop()
        m.cleanup()


def make_private_venv(into: Path, src: Path) -> str:
    """A virtualenv inside ``into`` holding this one's libraries (hard links: quick, no download) and an
    editable install of ``src``, as ``make run`` leaves it in a private clone."""
    venv = into / "checkout" / ".venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    here = Path(sysconfig.get_paths()["purelib"])
    there = venv / here.relative_to(sys.prefix)
    for entry in here.iterdir():
        if entry.name in NOT_FOR_SERVICES or entry.name.startswith("__editable__"):
            continue
        if entry.is_dir():
            shutil.copytree(entry, there / entry.name, copy_function=os.link, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            os.link(entry, there / entry.name)
    (there / "__editable__.dovetail.pth").write_text(f"{src}\n")
    return str(venv / "bin" / "python")


def test_virtualenv_in_a_private_folder_is_refused_at_start_in_one_line(private_dir: Path, tmp_path: Path) -> None:
    python = make_private_venv(private_dir, copy_source(private_dir))
    assert python_sees(python, {}).startswith(str(private_dir))
    m = Master.create(tmp_path)
    try:
        out = subprocess.run(
            [python, "-m", "dovetail.cli.main", "--data-dir", str(m.data_dir), "serve", "--smtp",
             f"127.0.0.1:{m.smtp_port}", "--imap", f"127.0.0.1:{m.imap_port}", "--submission", "", "--http", ""],
            capture_output=True, text=True, timeout=120)
        assert out.returncode == 2, out.stderr
        lines = [line for line in out.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, out.stderr
        assert "cannot read the Python libraries" in lines[0]
        assert f"cannot enter {private_dir}" in lines[0] and f"chmod o+x {private_dir}" in lines[0]
        assert "daemon started" not in out.stderr
    finally:
        m.cleanup()
