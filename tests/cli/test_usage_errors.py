"""Operator mistakes on the command line, through the installed ``dovetail`` script: one line, exit 2."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DOVETAIL = shutil.which("dovetail", path=str(Path(sys.executable).parent)) or shutil.which("dovetail")


def run(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert DOVETAIL, "the dovetail script is not installed next to this Python"
    return subprocess.run([DOVETAIL, "--data-dir", str(data_dir), *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "80"}, timeout=120)


@pytest.mark.parametrize("args, line", [
    (["queue", "show"], "dovetail: queue show: missing argument QUEUE_ID (see dovetail queue show --help)"),
    (["nosuchcmd"], "dovetail: no such command 'nosuchcmd' (see dovetail --help)"),
    (["--bogus"], "dovetail: no such option: --bogus (see dovetail --help)"),
    (["queue", "show", "--zzz", "Q"], "dovetail: queue show: no such option: --zzz (see dovetail queue show --help)"),
    (["tenant", "add"], "dovetail: tenant add: missing argument NAME (see dovetail tenant add --help)"),
    (["config", "set"], "dovetail: config set: missing argument ASSIGNMENTS (see dovetail config set --help)"),
    (["queue", "hold"], "dovetail: queue hold: missing argument QUEUE_ID (see dovetail queue hold --help)"),
    (["status", "extra"], "dovetail: status: got unexpected extra argument(s) (extra) (see dovetail status --help)"),
    (["mailbox", "add", "a@b.example", "--quota"], "dovetail: option '--quota' requires an argument"),
    (["alias", "nosuch"], "dovetail: alias: no such command 'nosuch' (see dovetail alias --help)"),
    ([], "dovetail: missing command (see dovetail --help)"),
])
def test_usage_errors_are_one_line_and_exit_2(tmp_path: Path, args: list[str], line: str) -> None:
    out = run(tmp_path / "d", *args)
    assert out.returncode == 2, out
    assert out.stderr.splitlines() == [line]
    assert out.stdout == ""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli") / "d"
    assert run(root, "init").returncode == 0
    return root


def test_an_uninitialised_data_directory_is_one_line(tmp_path: Path) -> None:
    out = run(tmp_path / "d", "tenant", "list")
    assert out.returncode == 2 and len(out.stderr.splitlines()) == 1, out.stderr
    assert "is not a Dovetail data directory" in out.stderr


@pytest.mark.parametrize("args, needle", [
    (["queue", "show", "NOTANID"], "dovetail: error:"),
    (["config", "set", "log.level=loud"], "log.level"),
    (["domain", "add", "x.example", "--tenant", "ghost"], "no such tenant"),
])
def test_operator_errors_are_one_line_and_exit_2(data_dir: Path, args: list[str], needle: str) -> None:
    out = run(data_dir, *args)
    assert out.returncode == 2, out
    assert len(out.stderr.splitlines()) == 1 and needle in out.stderr, out.stderr


def test_a_group_without_its_verb_shows_that_groups_help(tmp_path: Path) -> None:
    out = run(tmp_path / "d", "queue")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    shown = out.stdout + out.stderr
    assert "flush" in shown and "release" in shown


def test_help_still_exits_0(tmp_path: Path) -> None:
    out = run(tmp_path / "d", "queue", "show", "--help")
    assert out.returncode == 0 and "queue_id" in out.stdout.lower() and out.stderr == ""
