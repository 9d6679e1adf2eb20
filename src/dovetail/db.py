"""Database engine for the directory, campaigns and replies: SQLite (WAL) or PostgreSQL.

The schema is SQLAlchemy Core (see ``directory/schema.py``) and evolves only through the Alembic
migrations in ``migrations/``, on both engines. PostgreSQL's driver (psycopg) is the
``dovetail[postgresql]`` extra: a PostgreSQL ``database.url`` without it is refused in one line.
"""

from __future__ import annotations

import ast
import logging
import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .config import Config, ConfigError

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

MIGRATIONS = Path(__file__).parent / "migrations"


def engine_url(url: str) -> str:
    """psycopg 3 is the PostgreSQL driver; plain ``postgresql://`` URLs select it."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def require_driver(url: str) -> None:
    """Refuse a PostgreSQL URL when psycopg is not installed, naming the extra that brings it."""
    if not engine_url(url).startswith("postgresql+psycopg://"):
        return
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise ConfigError("database.url", url.split("://", 1)[0] + "://…",
                          "PostgreSQL needs the psycopg driver, which is not installed: "
                          "pip install 'dovetail[postgresql]'") from None


def make_engine(url: str) -> Engine:
    """An engine with SQLite tuned for many readers and one writer (WAL, busy timeout)."""
    require_driver(url)
    url = engine_url(url)
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True)


def alembic_config(engine: Engine) -> AlembicConfig:
    logging.getLogger("alembic").setLevel(logging.WARNING)  # before Alembic loads: its plugin setup logs at INFO
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


_ASSIGNMENT = re.compile(r"^(revision|down_revision)\s*(?::[^=]*)?=\s*(.+?)\s*$")


@cache
def script_heads() -> frozenset[str]:
    """The head revisions of the migration scripts, read from their ``revision``/``down_revision`` lines.

    Loading Alembic and its script directory costs most of a CLI command's start; this read costs a
    millisecond. A file it cannot read makes the set wrong, and a wrong set only means Alembic runs.
    """
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (MIGRATIONS / "versions").glob("*.py"):
        for line in path.read_text().splitlines():
            match = _ASSIGNMENT.match(line)
            if not match:
                continue
            try:
                value = ast.literal_eval(match.group(2))
            except (ValueError, SyntaxError):
                return frozenset()
            names = value if isinstance(value, (tuple, list)) else (value,)
            target = revisions if match.group(1) == "revision" else parents
            target.update(str(n) for n in names if n)
    return frozenset(revisions - parents)


def _at_heads(engine: Engine) -> bool:
    """Whether the database records exactly the scripts' heads (then an upgrade would do nothing)."""
    heads = script_heads()
    if not heads:
        return False
    try:
        with engine.connect() as conn:
            stamped = {row[0] for row in conn.execute(sa.text("SELECT version_num FROM alembic_version"))}
    except sa.exc.DBAPIError:
        return False
    return stamped == heads


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migrations (a no-op when it is there).

    Each area (directory, replies, web, outbound) keeps its own branch of revisions rooted at
    ``0001``, so ``heads`` upgrades them all. A database already at the heads is left without loading
    Alembic (every CLI command opens the database).
    """
    if _at_heads(engine):
        return
    logging.getLogger("alembic").setLevel(logging.WARNING)  # before Alembic loads: its plugin setup logs at INFO
    from alembic import command

    command.upgrade(alembic_config(engine), "heads")


def connect_and_migrate(cfg: Config) -> Engine:
    engine = make_engine(cfg.database_url)
    migrate(engine)
    return engine
