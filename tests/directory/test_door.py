"""The directory API is the only door to tenant data: no module outside ``directory/`` queries its tables.

Other packages' table definitions may name ``tenants`` for a foreign key, and may share the directory's
``MetaData``; queries go through ``Directory`` or ``directory.lookups``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import dovetail

PACKAGE = Path(dovetail.__file__).parent
TABLES = {"tenants", "domains", "mailboxes", "aliases", "alias_targets", "directory_state"}
# Table definitions: a foreign key to tenants.id needs the table object when the MetaData differs.
SCHEMA_MODULES = {"web/schema.py"}


def _directory_tables_imported(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("directory.schema"):
            found |= {alias.name for alias in node.names} & TABLES
        elif isinstance(node, ast.ImportFrom) and (node.module or "").endswith("directory"):
            if any(alias.name == "schema" for alias in node.names):
                found.add("schema")
        elif isinstance(node, ast.Import) and any(a.name.endswith("directory.schema") for a in node.names):
            found.add("schema")
    return found


def test_no_module_outside_the_directory_imports_its_tables() -> None:
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith(("directory/", "migrations/")) or rel in SCHEMA_MODULES:
            continue
        tables = _directory_tables_imported(path)
        if tables:
            offenders[rel] = sorted(tables)
    assert offenders == {}, "query the directory through Directory or directory.lookups"


def test_the_check_sees_an_offender(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from dovetail.directory.schema import domains, metadata\n")
    assert _directory_tables_imported(module) == {"domains"}
    module.write_text("from ..directory import schema\n")
    assert _directory_tables_imported(module) == {"schema"}
