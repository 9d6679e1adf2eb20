"""The log path: exact line format, prompt writes (held ones: at the end of the loop turn), settings applied
to loggers made earlier.

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


def test_held_lines_of_one_loop_turn_are_written_together_at_its_end(tmp_path: Path) -> None:
    proc, lines = run(
        "import asyncio\n"
        "from dovetail.log import hold_lines_per_turn\n"
        "configure('info', sys.argv[1])\n"
        "hold_lines_per_turn()\n"
        "log = get_logger('smtpd')\n"
        "def size(): return os.path.getsize(sys.argv[1])\n"
        "async def main():\n"
        "    log.info('connect from a[192.0.2.1]')\n"
        "    log.info('client=a[192.0.2.1]', qid='Q1')\n"
        "    held = size()\n"
        "    await asyncio.sleep(0)\n"
        "    written = size()\n"
        "    log.info('removed', qid='Q1')\n"
        "    log.warning('too many errors')\n"  # at once, after the info line held before it
        "    print(held, written, size(), file=sys.stderr, flush=True)\n"
        "    os.kill(os.getpid(), 9)\n"
        "asyncio.run(main())\n",
        tmp_path,
    )
    assert proc.returncode == -9
    held, written, last = (int(n) for n in proc.stderr.splitlines()[-1].split())
    assert held == 0 and written > 0 and last > written
    assert [LINE.match(line)["rest"] for line in lines] == [
        "info: connect from a[192.0.2.1]", "info: Q1: client=a[192.0.2.1]", "info: Q1: removed",
        "warning: too many errors"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_repeat_the_lines_its_parent_held(tmp_path: Path) -> None:
    proc, lines = run(
        "import asyncio\n"
        "from dovetail.log import flush, hold_lines_per_turn\n"
        "configure('info', sys.argv[1])\n"
        "hold_lines_per_turn()\n"
        "log = get_logger('master')\n"
        "async def main():\n"
        "    log.info('held by the parent')\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        log.info('the child')\n"
        "        flush()\n"
        "        os._exit(0)\n"
        "    os.waitpid(pid, 0)\n"
        "asyncio.run(main())\n",
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert [LINE.match(line)["rest"] for line in lines] == ["info: held by the parent", "info: the child"]


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


def test_library_records_are_rendered_as_our_lines(tmp_path: Path) -> None:
    proc, lines = run(
        "import http.server, threading, logging, httpx\n"
        "configure('info', sys.argv[1])\n"
        "class Quiet(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        self.send_response(204); self.end_headers()\n"
        "    def log_message(self, *a): pass\n"
        "srv = http.server.HTTPServer(('127.0.0.1', 0), Quiet)\n"
        "threading.Thread(target=srv.serve_forever, daemon=True).start()\n"
        "httpx.get(f'http://127.0.0.1:{srv.server_port}/ping')\n"
        "access = logging.getLogger('uvicorn.access')\n"
        "access.info('%s - \"%s %s HTTP/%s\" %d', '127.0.0.1:5', 'GET', '/x', '1.1', 200)\n"
        "try:\n"
        "    1 / 0\n"
        "except ZeroDivisionError:\n"
        "    logging.getLogger('uvicorn.error').exception('Exception in ASGI application')\n"
        "logging.getLogger('sqlalchemy.engine').debug('below the level: dropped')\n",
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert lines and all(LINE.match(line) for line in lines), lines
    parsed = [(LINE.match(line)["comp"], LINE.match(line)["rest"]) for line in lines]
    assert any(c == "http" and r.startswith("info: HTTP Request: GET http://127.0.0.1:") and "204" in r
               for c, r in parsed), parsed
    assert ("web", "info: http request, client=127.0.0.1:5, method=GET, path=/x, status=200, http=1.1") in parsed
    errors = [r for c, r in parsed if c == "web" and r.startswith("error:")]
    assert errors[0] == "error: Exception in ASGI application, error='ZeroDivisionError: division by zero'"
    assert any("| ZeroDivisionError: division by zero" in r for r in errors[1:])
    assert not any("dropped" in r for _, r in parsed)
    assert proc.stderr.splitlines() == lines


def test_reopen_follows_a_moved_file(tmp_path: Path) -> None:
    proc, lines = run(
        "from dovetail.log import reopen\n"
        "log = get_logger('qmgr')\n"
        "configure('info', sys.argv[1])\n"
        "log.info('before', qid='Q1')\n"
        "os.rename(sys.argv[1], sys.argv[1] + '.1')\n"
        "log.info('still old', qid='Q2')\n"
        "reopen()\n"
        "log.info('after', qid='Q3')\n",
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    old = (tmp_path / "mail.log.1").read_text().splitlines()
    assert [LINE.match(line)["rest"] for line in old] == ["info: Q1: before", "info: Q2: still old"]
    assert [LINE.match(line)["rest"] for line in lines] == ["info: Q3: after"]


def test_log_file_paths_are_relative_to_the_data_directory(tmp_path: Path) -> None:
    from dovetail.log import log_file

    assert log_file("log/dovetail.log", tmp_path) == tmp_path / "log" / "dovetail.log"
    assert log_file("/var/log/dovetail.log", tmp_path) == Path("/var/log/dovetail.log")
    assert log_file("-", tmp_path) is None and log_file("", tmp_path) is None


def test_an_exception_logged_by_a_service_carries_its_traceback(tmp_path: Path) -> None:
    """``log.exception`` (an ``internal error`` answered ``[SERVERBUG]``) leaves the traceback in the log,
    one line per line, in both formats: the line alone does not say where the error came from."""
    code = ("log = get_logger('imap')\n"
            "configure('info', sys.argv[1]{json})\n"
            "def deep():\n"
            "    open('/nonexistent/x')\n"
            "try:\n"
            "    deep()\n"
            "except OSError as exc:\n"
            "    log.exception('internal error', command='APPEND', error=repr(exc))\n")
    proc, lines = run(code.format(json=""), tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert LINE.match(lines[0])["rest"].startswith("error: internal error, command=APPEND")  # type: ignore[index]
    assert "exc_info" not in lines[0]
    rest = [LINE.match(line)["rest"] for line in lines[1:]]  # type: ignore[index]
    assert rest[0] == "error: | Traceback (most recent call last):"
    assert any("in deep" in r for r in rest) and rest[-1].startswith("error: | FileNotFoundError")
    (tmp_path / "mail.log").unlink()
    proc, lines = run(code.format(json=", json=True"), tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(lines[0])
    assert "in deep" in data["traceback"] and "exc_info" not in data
