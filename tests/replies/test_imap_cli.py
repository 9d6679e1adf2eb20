"""``dovetail replies imap add|status|rm`` and ``replies inbox add``: the verbs the web admin shares."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dovetail import config, datadir
from dovetail.db import make_engine, migrate
from dovetail.directory import Directory
from dovetail.replies.sources.imap import ImapAccounts
from tests import clirun


@pytest.mark.timeout(300)  # one CLI process per verb, each importing the package
def test_imap_sources_and_inboxes_from_the_cli(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / config.CONFIG_NAME).write_text(config.default_file_text())
    datadir.init(data)
    engine = make_engine(config.load(data).database_url)
    migrate(engine)
    directory = Directory(engine)
    directory.tenant_add("acme")
    directory.domain_add("acme.test", "acme")
    directory.mailbox_add("replies@acme.test", None)
    env = {**os.environ, "COLUMNS": "200"}

    def dovetail(*args: str, stdin: str | None = None, code: int = 0) -> str:
        out = clirun.run(["--data-dir", str(data), *args], env=env, input=stdin, timeout=120)
        assert out.returncode == code, out.stdout + out.stderr
        return out.stdout + out.stderr

    made = json.loads(dovetail("replies", "imap", "add", "--tenant", "acme", "support", "--host", "imap.example",
                               "--user", "u", "--json", stdin="pw\n"))
    refused = dovetail("replies", "imap", "add", "--tenant", "acme", "support", "--host", "imap.example",
                       "--user", "u", stdin="pw\n", code=2)
    assert "already exists" in refused and len(refused.strip().splitlines()) == 1
    [row] = json.loads(dovetail("replies", "imap", "status", "--tenant", "acme", "--json"))
    assert (row["id"], row["name"], row["last_uid"], row["last_error"]) == (made["id"], "support", None, None)
    assert "password" not in row
    dovetail("replies", "imap", "rm", "--tenant", "acme", str(made["id"]))
    assert ImapAccounts(engine).status() == []
    assert "no IMAP account" in dovetail("replies", "imap", "rm", "--tenant", "acme", str(made["id"]), code=2)

    assert "not a mailbox of tenant acme" in dovetail("replies", "inbox", "add", "--tenant", "acme",
                                                      "nobody@acme.test", code=2)
    assert json.loads(dovetail("replies", "inbox", "add", "--tenant", "acme", "Replies@acme.test", "--json")) == {
        "tenant": "acme", "address": "replies@acme.test"}
    engine.dispose()
