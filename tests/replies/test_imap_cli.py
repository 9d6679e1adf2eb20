"""``dovetail replies imap add|status|rm`` and ``replies inbox add``: the verbs the web admin shares."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_imap_sources_and_inboxes_from_the_cli(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {**os.environ, "COLUMNS": "200"}

    def dovetail(*args: str, stdin: str | None = None, code: int = 0) -> str:
        out = subprocess.run([sys.executable, "-m", "dovetail.cli.main", "--data-dir", str(data), *args],
                             capture_output=True, text=True, env=env, input=stdin, timeout=120)
        assert out.returncode == code, out.stdout + out.stderr
        return out.stdout + out.stderr

    dovetail("init")
    dovetail("tenant", "add", "acme")
    dovetail("domain", "add", "acme.test", "--tenant", "acme")
    dovetail("mailbox", "add", "replies@acme.test", "--password", "a long password")
    made = json.loads(dovetail("replies", "imap", "add", "--tenant", "acme", "support", "--host", "imap.example",
                               "--user", "u", "--json", stdin="pw\n"))
    refused = dovetail("replies", "imap", "add", "--tenant", "acme", "support", "--host", "imap.example",
                       "--user", "u", stdin="pw\n", code=2)
    assert "already exists" in refused and len(refused.strip().splitlines()) == 1
    [row] = json.loads(dovetail("replies", "imap", "status", "--tenant", "acme", "--json"))
    assert (row["id"], row["name"], row["last_uid"], row["last_error"]) == (made["id"], "support", None, None)
    assert "pw" not in json.dumps(row).replace("imap", "")
    dovetail("replies", "imap", "rm", "--tenant", "acme", str(made["id"]))
    assert json.loads(dovetail("replies", "imap", "status", "--json")) == []
    assert "no IMAP account" in dovetail("replies", "imap", "rm", "--tenant", "acme", str(made["id"]), code=2)

    assert "is a reply inbox" in dovetail("replies", "inbox", "add", "--tenant", "acme", "replies@acme.test")
    assert "not a mailbox of tenant acme" in dovetail("replies", "inbox", "add", "--tenant", "acme",
                                                      "nobody@acme.test", code=2)
    assert json.loads(dovetail("replies", "inbox", "list", "--tenant", "acme", "--json")) == ["replies@acme.test"]
