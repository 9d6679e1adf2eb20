"""The log file of a real ``dovetail serve``: written by default, greppable by queue id, reopened after rotation."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import Master, cli, free_port, wait_for

LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d dovetail/[\w-]+\[\d+\]: \w+: ")


@pytest.fixture
def master(tmp_path: Path) -> Iterator[Master]:
    m = Master.create(tmp_path)
    m.http_port = free_port()
    m.start("--http", f"127.0.0.1:{m.http_port}")
    yield m
    m.stop()
    m.cleanup()


def send(master: Master, subject: str) -> str:
    with master.smtp() as s:
        s.ehlo("client.example")
        s.mail("alice@ext.example")
        s.rcpt("bob@acme.example")
        code, text = s.data(f"Subject: {subject}\r\n\r\nbody\r\n".encode())
    assert code == 250
    return re.search(rb"queued as ([0-9A-Z]+)", text).group(1).decode()


def read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def story(path: Path, qid: str) -> list[str]:
    return [line for line in read(path).splitlines() if f"{qid}:" in line]


def test_the_log_file_tells_a_story_and_is_reopened_after_rotation(master: Master) -> None:
    path = master.data_dir / "log" / "dovetail.log"
    qid = send(master, "first")
    wait_for(lambda: f"{qid}: removed" in read(path), 30, "the first message's story in the log file")
    first = "\n".join(story(path, qid))
    assert "client=" in first and "from=<alice@ext.example>" in first  # smtpd's lines
    assert "to=<bob@acme.example>" in first and "status=sent" in first  # qmgr's lines
    assert all(LINE.match(line) for line in read(path).splitlines())

    # The web server's access lines land in the same file, in the same format.
    with urllib.request.urlopen(f"http://127.0.0.1:{master.http_port}/login", timeout=10) as resp:
        assert resp.status == 200
    wait_for(lambda: "path=/login" in read(path), 20, "the access line")
    access = next(line for line in read(path).splitlines() if "path=/login" in line)
    assert LINE.match(access) and "dovetail/web[" in access and "status=200" in access

    rotated = path.with_name("dovetail.log.1")
    path.rename(rotated)
    out = cli(master.data_dir, "log", "reopen")
    assert out.returncode == 0, out.stderr
    wait_for(lambda: "log file reopened" in read(path), 20, "a new log file")

    # Every worker reopened: a new message's smtpd and qmgr lines are all in the new file, none in the old.
    second = send(master, "second")
    wait_for(lambda: f"{second}: removed" in read(path), 30, "the second message's story in the new file")
    lines = "\n".join(story(path, second))
    assert "client=" in lines and "status=sent" in lines
    assert story(rotated, second) == []
    assert f"{qid}: removed" in read(rotated) and f"{qid}:" not in read(path)


def test_sighup_reopens_the_log_file_too(master: Master) -> None:
    import signal

    path = master.data_dir / "log" / "dovetail.log"
    wait_for(lambda: "daemon started" in read(path), 20, "the master's first line")
    path.rename(path.with_name("dovetail.log.old"))
    master.signal(signal.SIGHUP)
    wait_for(lambda: "log file reopened" in read(path), 20, "a new log file after SIGHUP")
    qid = send(master, "after hup")
    wait_for(lambda: f"{qid}: removed" in read(path), 30, "the story in the new file")


def test_log_reopen_without_a_master_is_one_line(tmp_path: Path) -> None:
    data = tmp_path / "d"
    assert cli(data, "init").returncode == 0
    out = cli(data, "log", "reopen")
    assert out.returncode == 2 and out.stderr.strip() == "dovetail: error: dovetail is not running"
