"""The `dovetail` command as an operator runs it: a process per verb (:mod:`tests.clirun`), exit codes, --json
output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import clirun

DOVETAIL = [sys.executable, "-m", "dovetail.cli.main"]


def run(data_dir: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return clirun.run(["--data-dir", str(data_dir), *args], input=stdin, env=env, timeout=120)


def ok(data_dir: Path, *args: str, stdin: str | None = None) -> str:
    out = run(data_dir, *args, stdin=stdin)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_init_creates_the_layout(tmp_path: Path) -> None:
    root = tmp_path / "d"
    ok(root, "init")
    for rel in ("dovetail.toml", "dovetail.db", "tls/cert.pem", "tls/key.pem", "queue/incoming", "queue/active",
                "queue/deferred", "queue/hold", "queue/corrupt", "mail", "dkim"):
        assert (root / rel).exists(), rel
    assert oct((root / "tls/key.pem").stat().st_mode & 0o777) == "0o600"
    text = (root / "dovetail.toml").read_text()
    assert "# max_message_size = " in text and "[smtp]" in text
    assert "nothing to do" in ok(root, "init")


def test_env_var_selects_data_dir(tmp_path: Path) -> None:
    root = tmp_path / "envdir"
    env = {**os.environ, "DOVETAIL_DATA_DIR": str(root)}
    out = subprocess.run([*DOVETAIL, "init"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0 and (root / "dovetail.toml").exists()


def test_config_show_set_and_refusal(tmp_path: Path) -> None:
    root = tmp_path / "d"
    ok(root, "init")
    assert ok(root, "config", "show").strip() == ""
    assert "smtp.max_message_size = 52428800" in ok(root, "config", "show", "--all")
    ok(root, "config", "set", "smtp.max_message_size=20M", "queue.maximal_lifetime=2d")
    shown = ok(root, "config", "show")
    assert "smtp.max_message_size = 20971520" in shown and "queue.maximal_lifetime = 172800.0" in shown
    assert "Every key has a default" in (root / "dovetail.toml").read_text()  # comments kept
    bad = run(root, "config", "set", "smtp.max_recipients=lots")
    assert bad.returncode == 2 and "smtp.max_recipients" in bad.stderr and "'lots'" in bad.stderr
    assert "integer" in bad.stderr and "Traceback" not in bad.stderr
    assert run(root, "config", "set", "no.such=1").returncode == 2
    assert json.loads(ok(root, "config", "show", "--json"))["smtp.max_message_size"] == 20971520


def test_hostname_defaults_to_this_machine(tmp_path: Path) -> None:
    from dovetail.config import machine_hostname

    root = tmp_path / "d"
    ok(root, "init")
    assert '# hostname = ""' in (root / "dovetail.toml").read_text()  # init leaves it to follow the machine
    assert "server.hostname" not in ok(root, "config", "show")
    assert f'server.hostname = "{machine_hostname()}"' in ok(root, "config", "show", "--all").splitlines()
    assert json.loads(ok(root, "config", "show", "server.hostname", "--json")) == {
        "server.hostname": machine_hostname()}
    ok(root, "config", "set", "server.hostname=mail.example.com")
    assert ok(root, "config", "show").strip() == 'server.hostname = "mail.example.com"'


def test_bad_value_in_file_is_refused_with_key(tmp_path: Path) -> None:
    root = tmp_path / "d"
    ok(root, "init")
    path = root / "dovetail.toml"
    path.write_text(path.read_text().replace('# level = "info"', 'level = "loud"'))
    out = run(root, "config", "show")
    assert out.returncode == 2 and "log.level" in out.stderr and "loud" in out.stderr
    path.write_text(path.read_text() + "\n[log]\n")  # a duplicate table: not TOML at all
    out = run(root, "config", "show")
    assert out.returncode == 2 and "not valid TOML" in out.stderr


@pytest.mark.timeout(300)  # one CLI process per verb
def test_directory_verbs_end_to_end(tmp_path: Path) -> None:
    root = tmp_path / "d"
    ok(root, "init")
    ok(root, "tenant", "add", "acme", "--display-name", "Acme Inc")
    ok(root, "domain", "add", "Bücher.Example", "--tenant", "acme")
    ok(root, "mailbox", "add", "bob@bücher.example", "--password", "pw", "--quota", "1G")
    ok(root, "mailbox", "add", "alice@xn--bcher-kva.example", "--password-stdin", stdin="pw2\n")
    ok(root, "alias", "add", "team@bücher.example", "bob@bücher.example", "alice@bücher.example")
    domains = json.loads(ok(root, "domain", "list", "--json"))
    assert domains[0]["name"] == "bücher.example" and domains[0]["ascii"] == "xn--bcher-kva.example"
    boxes = json.loads(ok(root, "mailbox", "list", "--json"))
    assert [b["address"] for b in boxes] == ["alice@xn--bcher-kva.example", "bob@xn--bcher-kva.example"]
    assert boxes[1]["quota_bytes"] == 1024**3
    res = json.loads(ok(root, "resolve", "team+x@BÜCHER.example", "--json"))
    assert res["status"] == "ok" and {m["address"] for m in res["mailboxes"]} == {
        "bob@xn--bcher-kva.example", "alice@xn--bcher-kva.example"}
    assert all(m["detail"] == "x" for m in res["mailboxes"])
    ok(root, "domain", "catchall", "bücher.example", "bob@bücher.example")
    assert "bob@bücher.example" in ok(root, "resolve", "random@bücher.example")
    ok(root, "domain", "catchall", "bücher.example", "--off")
    unknown = run(root, "resolve", "random@bücher.example")
    assert unknown.returncode == 1 and "unknown" in unknown.stdout
    assert "table" not in ok(root, "tenant", "list")
    refused = run(root, "tenant", "rm", "acme")
    assert refused.returncode == 2 and "--force" in refused.stderr
    ok(root, "tenant", "rm", "acme", "--force")
    assert json.loads(ok(root, "tenant", "list", "--json")) == []


@pytest.mark.parametrize("args, needle", [
    (["domain", "add", "x.example", "--tenant", "ghost"], "no such tenant"),
    (["mailbox", "add", "../../etc@x.example", "-p", "x"], "invalid local part"),
    (["mailbox", "add", "a@b.example"], "--password"),
    (["mailbox", "quota", "a@b.example", "lots"], "quota"),
    (["alias", "rm", "nobody@nowhere.example"], "not one of our domains"),
    (["domain", "catchall", "x.example"], "TARGET or --off"),
])
def test_cli_errors_exit_2_without_traceback(tmp_path: Path, args: list[str], needle: str) -> None:
    root = tmp_path / "d"
    ok(root, "init")
    out = run(root, *args)
    assert out.returncode == 2, out
    assert needle in out.stderr and "Traceback" not in out.stderr


def test_uninitialised_dir_is_a_clear_error(tmp_path: Path) -> None:
    out = run(tmp_path / "missing", "tenant", "list")
    assert out.returncode == 2 and "dovetail" in out.stderr and "init" in out.stderr


def test_import_dovecot_passwd_file(tmp_path: Path) -> None:
    root = tmp_path / "d"
    ok(root, "init")
    ok(root, "tenant", "add", "acme")
    ok(root, "domain", "add", "acme.example", "--tenant", "acme")
    pw = tmp_path / "passwd"
    pw.write_text("# users\nbob@acme.example:{PLAIN}secret::::::\nx@other.example:{PLAIN}y::::::\nbroken\n")
    out = json.loads(ok(root, "mailbox", "import-passwd", str(pw), "--json"))
    assert out["added"] == ["bob@acme.example"] and len(out["skipped"]) == 2
    from dovetail import config
    from dovetail.db import make_engine
    from dovetail.directory import Directory
    from dovetail.mailauth.passwords import verify_password

    row = Directory(make_engine(config.load(root).database_url)).mailbox_get("bob@acme.example")
    assert verify_password(row["password_hash"], "secret")


def test_config_show_masks_secrets_unless_asked(tmp_path: Path) -> None:
    root = tmp_path / "d"
    ok(root, "init")
    secret = "s3cret-cluster-value-0123456789"
    ok(root, "config", "set", f"cluster.secret={secret}", "database.url=postgresql://dove:pg-pass@db.example/mail",
       "events.nats_url=nats://events:nats-pass@127.0.0.1:4222")
    shown = ok(root, "config", "show")
    assert 'cluster.secret = "********"' in shown
    assert 'database.url = "postgresql://dove:********@db.example/mail"' in shown
    assert "nats://events:********@127.0.0.1:4222" in shown
    assert not any(s in shown for s in (secret, "pg-pass", "nats-pass"))
    assert json.loads(ok(root, "config", "show", "cluster.secret", "--json")) == {"cluster.secret": "********"}
    revealed = json.loads(ok(root, "config", "show", "--json", "--show-secrets"))
    assert revealed["cluster.secret"] == secret
    assert revealed["database.url"] == "postgresql://dove:pg-pass@db.example/mail"
