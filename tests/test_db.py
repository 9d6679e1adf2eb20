"""The database driver: PostgreSQL's psycopg is an extra, and its absence is one clear line."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import sqlalchemy as sa

from dovetail import config

# A real import failure: a finder in front of every other that refuses psycopg, as when it is not installed.
WITHOUT_PSYCOPG = textwrap.dedent("""
    import sys
    from importlib.abc import MetaPathFinder

    class NoPsycopg(MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "psycopg" or name.startswith("psycopg."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NoPsycopg())
    from dovetail.cli.main import main
    sys.exit(main(sys.argv[1:]))
""")


def _cli_without_psycopg(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", WITHOUT_PSYCOPG, "--data-dir", str(data_dir), *args],
                          capture_output=True, text=True, timeout=60)


def test_postgresql_url_without_psycopg_is_one_line_naming_the_extra(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / config.CONFIG_NAME).write_text(config.default_file_text())
    config.set_value(data, "database.url", "postgresql://dovetail:s3cret@127.0.0.1:1/dovetail")

    out = _cli_without_psycopg(data, "tenant", "list")

    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "database.url" in lines[0] and "psycopg" in lines[0]
    assert "pip install 'dovetail[postgresql]'" in lines[0]
    assert "s3cret" not in out.stderr  # the URL's password is not repeated


def test_sqlite_needs_no_psycopg(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / config.CONFIG_NAME).write_text(config.default_file_text())

    assert _cli_without_psycopg(data, "tenant", "add", "acme").returncode == 0
    out = _cli_without_psycopg(data, "tenant", "list")

    assert out.returncode == 0, out.stderr
    assert "acme" in out.stdout


def test_the_quick_head_check_agrees_with_alembic_and_skips_only_an_up_to_date_database(tmp_path: Path) -> None:
    from alembic.script import ScriptDirectory

    from dovetail.db import _at_heads, alembic_config, make_engine, migrate, script_heads

    engine = make_engine(f"sqlite:///{tmp_path / 'd.db'}")
    assert script_heads() == set(ScriptDirectory.from_config(alembic_config(engine)).get_heads())
    assert not _at_heads(engine)  # no alembic_version table yet
    migrate(engine)
    assert _at_heads(engine)
    with engine.begin() as conn:  # a database one migration behind is upgraded again
        conn.execute(sa.text("DELETE FROM alembic_version WHERE version_num = '0002'"))
        conn.execute(sa.text("INSERT INTO alembic_version VALUES ('0001')"))
    assert not _at_heads(engine)
