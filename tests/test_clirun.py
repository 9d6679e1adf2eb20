"""The tests' way of running ``dovetail`` verbs (tests/clirun.py): each verb gets the environment,
standard input and working directory it is given, its own exit status and its own output."""

from __future__ import annotations

import os
from pathlib import Path

from tests import clirun


def test_a_verb_gets_its_environment_and_working_directory(tmp_path: Path) -> None:
    data = tmp_path / "from-env"
    done = clirun.run(["init"], env={**os.environ, "DOVETAIL_DATA_DIR": str(data)}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (data / "dovetail.toml").is_file() and f"{data} is ready" in done.stdout
    relative = clirun.run(["--data-dir", "rel", "init"], cwd=tmp_path)
    assert relative.returncode == 0 and (tmp_path / "rel" / "dovetail.toml").is_file()


def test_status_and_streams_are_the_verbs_own(tmp_path: Path) -> None:
    bad = clirun.run(["--data-dir", str(tmp_path / "d"), "queue", "show"])
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.startswith("dovetail: queue show: missing argument QUEUE_ID")
    assert clirun.run(["--data-dir", str(tmp_path / "d"), "init"]).returncode == 0
    refused = clirun.run(["--data-dir", str(tmp_path / "d"), "tenant", "add", "bad name"])
    assert refused.returncode == 2 and "invalid tenant name" in refused.stderr
    good = clirun.run(["--data-dir", str(tmp_path / "d"), "tenant", "add", "acme"])
    assert (good.returncode, good.stdout, good.stderr) == (0, "tenant acme added\n", "")


def test_standard_input_reaches_the_verb(tmp_path: Path) -> None:
    d = str(tmp_path / "d")
    for args in (["init"], ["tenant", "add", "acme"], ["domain", "add", "acme.example", "--tenant", "acme"]):
        assert clirun.run(["--data-dir", d, *args]).returncode == 0
    empty = clirun.run(["--data-dir", d, "mailbox", "add", "bob@acme.example", "--password-stdin"])
    assert empty.returncode == 2 and "empty password" in empty.stderr  # no input: an empty stdin
    done = clirun.run(["--data-dir", d, "mailbox", "add", "bob@acme.example", "--password-stdin"], input="secret\n")
    assert done.returncode == 0, done.stderr
    assert "bob@acme.example" in clirun.run(["--data-dir", d, "mailbox", "list", "--json"]).stdout
