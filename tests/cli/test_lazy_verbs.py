"""The root command imports a verb's module only when the verb is named: the table of verbs in
``dovetail.cli.main`` must name every module and exactly the verbs each registers, and a verb's start
must not pay for the others (the replies engine, outbound, the directory)."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import dovetail.cli
from dovetail.cli.main import VERB_MODULES, verbs_of

NOT_VERB_MODULES = {"main", "context"}


def test_the_table_names_every_verb_module_and_exactly_its_verbs() -> None:
    listed = [name for modules, _ in VERB_MODULES for name in modules]
    on_disk = {m.name for m in pkgutil.iter_modules(dovetail.cli.__path__)} - NOT_VERB_MODULES
    assert sorted(listed) == sorted(on_disk)
    for modules, verbs in VERB_MODULES:
        assert sorted(verbs_of(modules)) == sorted(verbs), modules


def test_tenant_move_comes_with_the_tenant_group() -> None:
    (tenant,) = [modules for modules, verbs in VERB_MODULES if "tenant" in verbs]
    group = verbs_of(tenant)["tenant"]
    assert "move" in group.commands and "add" in group.commands  # type: ignore[attr-defined]


def test_the_help_lists_every_verb_once(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "dovetail.cli.main", "--help"], capture_output=True, text=True,
                          env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"}, timeout=120, check=True)
    listed = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("│ ") and
              len(line.split()) > 2 and not line.split()[1].startswith("-")]
    every = ["init"] + [v for _, verbs in VERB_MODULES for v in verbs]
    assert listed == every


PROBE = r"""
import json, sys
from dovetail.cli.main import main
rc = main(sys.argv[1:])
print(json.dumps({"rc": rc, "modules": sorted(m for m in sys.modules if m.startswith(("dovetail", "sqlalchemy")))}))
"""


def loaded_by(tmp_path: Path, *args: str) -> set[str]:
    done = subprocess.run([sys.executable, "-c", PROBE, "--data-dir", str(tmp_path / "d"), *args],
                          capture_output=True, text=True, timeout=120)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["rc"] == 0, done.stderr
    return set(out["modules"])


def test_a_verb_loads_its_own_module_only(tmp_path: Path) -> None:
    assert "dovetail.cli.directory_cmds" not in loaded_by(tmp_path, "init")
    config_show = loaded_by(tmp_path, "config", "show")
    assert "dovetail.cli.config_cmds" in config_show
    others = {f"dovetail.cli.{m}" for modules, _ in VERB_MODULES for m in modules} - {"dovetail.cli.config_cmds"}
    assert not config_show & others
    # Showing the configuration needs no database, no directory and no replies engine.
    assert not {m for m in config_show if m.startswith(("sqlalchemy", "dovetail.directory", "dovetail.replies"))}

    transport = loaded_by(tmp_path, "transport", "list", "--json")
    assert "dovetail.cli.outbound_cmds" in transport and "dovetail.cli.replies_cmds" not in transport
    assert "dovetail.outbound.delivery" not in transport  # listing the rules does not load the delivery agent

