"""The log path: exact line format, prompt unbuffered writes, settings applied to loggers made earlier.

Each case runs in a child process, because ``configure`` sets up the whole process.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dovetail.log import get_logger

_log = get_logger("test")  # configured at import, as services do, before caplog attaches its handler
LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d dovetail/(?P<comp>[\w-]+)\[(?P<pid>\d+)\]: (?P<rest>.*)$")


def run(code: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    prelude = "import os, sys\nfrom dovetail.log import configure, get_logger\n"
    proc = subprocess.run([sys.executable, "-c", prelude + code, str(tmp_path / "mail.log")],
                          capture_output=True, text=True, timeout=60)
    path = tmp_path / "mail.log"
    lines = path.read_text().splitlines() if path.exists() else []
    return proc, lines


def test_lines_reach_the_file_and_stderr_before_a_crash(tmp_path: Path) -> None:
    proc, lines = run(
        "log = get_logger('smtpd')\n"  # bound before configure, as module-level loggers are
        "configure('info', sys.argv[1])\n"
        "log.info('from=<a@example.org>, nrcpt=1, proto=ESMTP', qid='4AbC123')\n"
        "log.warning('reject', client='a b', n=3)\n"
        "os.kill(os.getpid(), 9)\n",
        tmp_path,
    )
    assert proc.returncode == -9
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed) and len(parsed) == 2
    assert {m["comp"] for m in parsed} == {"smtpd"} and len({m["pid"] for m in parsed}) == 1
    assert parsed[0]["rest"] == "info: 4AbC123: from=<a@example.org>, nrcpt=1, proto=ESMTP"
    assert parsed[1]["rest"] == "warning: reject, client='a b', n=3"
    assert proc.stderr.splitlines() == lines


def test_level_applies_to_loggers_bound_earlier(tmp_path: Path) -> None:
    proc, lines = run(
        "log = get_logger('qmgr')\n"
        "configure('warning', sys.argv[1])\n"
        "log.info('hidden')\n"
        "log.error('shown', qid='Q1')\n"
        "configure('debug', sys.argv[1])\n"
        "log.debug('now shown')\n",
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert [LINE.match(line)["rest"] for line in lines] == ["error: Q1: shown", "debug: now shown"]


def test_json_format(tmp_path: Path) -> None:
    proc, lines = run(
        "log = get_logger('virtual')\n"
        "configure('info', sys.argv[1], json=True)\n"
        "log.info('delivered', qid='Q2', to='x@example.org')\n",
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(lines) == 1
    data = json.loads(lines[0])
    assert data["component"] == "virtual" and data["event"] == "delivered" and data["qid"] == "Q2"
    assert data["level"] == "info" and data["pid"] > 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_processes_sharing_the_file_append_whole_lines(tmp_path: Path) -> None:
    proc, lines = run(
        "configure('info', sys.argv[1])\n"
        "log = get_logger('smtpd')\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    configure('info', sys.argv[1])\n"
        "    for i in range(500): log.info('child', i=i, pad='x' * 200)\n"
        "    os._exit(0)\n"
        "for i in range(500): log.info('parent', i=i, pad='y' * 200)\n"
        "os.waitpid(pid, 0)\n",
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(lines) == 1000 and all(LINE.match(line) for line in lines)
    assert sum("child" in line for line in lines) == 500


def test_stdlib_handlers_of_others_still_see_our_lines(caplog: pytest.LogCaptureFixture) -> None:
    _log.warning("seen by caplog", qid="Q3")
    assert "Q3: seen by caplog" in caplog.text


def test_bad_text_never_raises(tmp_path: Path) -> None:
    proc, lines = run(
        "configure('info', sys.argv[1])\n"
        "get_logger('smtpd').info('helo=' + '\\udcff')\n",
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert lines and lines[0].endswith("helo=\\udcff")
