"""The DMARC enforcement switches from the command line: tenant and domain settings, which one applies
(``domain show``, ``resolve -v``), and bad values refused with one line and exit 2. In-process through
the command's own entry point (``main``), which is what the installed ``dovetail`` script calls."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from dovetail.cli.main import main


class Cli:
    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys

    def run(self, root: Path, *args: str) -> subprocess.CompletedProcess[str]:
        self.capsys.readouterr()
        rc = main(["--data-dir", str(root), *args])
        out = self.capsys.readouterr()
        return subprocess.CompletedProcess(list(args), rc, out.out, out.err)

    def ok(self, root: Path, *args: str) -> str:
        done = self.run(root, *args)
        assert done.returncode == 0, done.stderr
        return done.stdout


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(capsys)


def test_tenant_and_domain_switches_and_who_decides(tmp_path: Path, cli: Cli) -> None:
    ok = cli.ok
    root = tmp_path / "d"
    ok(root, "init")
    ok(root, "tenant", "add", "acme")
    ok(root, "domain", "add", "acme.example", "--tenant", "acme")
    ok(root, "alias", "add", "info@acme.example", "someone@elsewhere.example")

    def shown() -> str:
        line = [x for x in ok(root, "domain", "show", "acme.example").splitlines() if x.startswith("DMARC")]
        return line[0]

    assert shown() == "DMARC enforcement: on (mx.dmarc_enforce)"
    out = ok(root, "tenant", "set", "acme", "--dmarc-enforce", "off")
    assert "DMARC enforcement for its domains: off (tenant setting)" in out
    assert shown() == "DMARC enforcement: off (tenant setting)"
    assert "DMARC enforcement: off (tenant setting)" in ok(root, "tenant", "show", "acme")
    assert "DMARC enforcement: off (tenant setting)" in ok(root, "resolve", "-v", "info@acme.example")
    assert "DMARC" not in ok(root, "resolve", "info@acme.example")  # only with -v
    out = ok(root, "domain", "set", "acme.example", "--dmarc-enforce", "on")
    assert "on (domain setting)" in out and shown() == "DMARC enforcement: on (domain setting)"
    data = json.loads(ok(root, "domain", "show", "acme.example", "--json"))
    assert (data["dmarc_enforce"], data["dmarc_enforce_by"], data["dmarc_enforce_effective"]) == (True, "domain", True)
    ok(root, "domain", "set", "acme.example", "--dmarc-enforce", "inherit")
    ok(root, "tenant", "set", "acme", "--dmarc-enforce", "inherit")
    ok(root, "config", "set", "mx.dmarc_enforce=no")
    assert shown() == "DMARC enforcement: off (mx.dmarc_enforce)"
    resolved = json.loads(ok(root, "resolve", "info@acme.example", "--json"))
    assert (resolved["dmarc_enforce"], resolved["dmarc_enforce_by"]) == (False, "global")
    assert json.loads(ok(root, "tenant", "show", "acme", "--json"))["dmarc_enforce"] is None


def test_bad_values_are_refused_with_one_line(tmp_path: Path, cli: Cli) -> None:
    ok, run = cli.ok, cli.run
    root = tmp_path / "d"
    ok(root, "init")
    ok(root, "tenant", "add", "acme")
    for args in (("tenant", "set", "acme", "--dmarc-enforce", "sometimes"),
                 ("domain", "set", "nowhere.example", "--dmarc-enforce", "on"),
                 ("tenant", "set", "nobody", "--dmarc-enforce", "on"),
                 ("config", "set", "mx.arc_trusted_sealers=not_a domain!")):
        out = run(root, *args)
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr, out.stderr
    assert "on, off or inherit" in run(root, "tenant", "set", "acme", "--dmarc-enforce", "sometimes").stderr
    ok(root, "config", "set", "mx.arc_trusted_sealers=lists.example.org, Bücher.example")
    assert 'mx.arc_trusted_sealers = ["lists.example.org", "xn--bcher-kva.example"]' in ok(root, "config", "show")
