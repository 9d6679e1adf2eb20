"""Database engine for the directory, campaigns and replies: SQLite (WAL) or PostgreSQL.

The schema is SQLAlchemy Core (see ``directory/schema.py``) and evolves only through the Alembic
migrations in ``migrations/``, on both engines. PostgreSQL's driver (psycopg) is the
``dovetail[postgresql]`` extra: a PostgreSQL ``database.url`` without it is refused in one line.
"""

from __future__ import annotations

import logging
from pathlib import Path

import sqlalchemy as sa

logging.getLogger("alembic").setLevel(logging.WARNING)  # before Alembic loads: its plugin setup logs at INFO

from alembic import command  # noqa: E402
from alembic.config import Config as AlembicConfig  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402

from .config import Config, ConfigError  # noqa: E402

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
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migrations (a no-op when it is there).

    Each area (directory, replies, web, outbound) keeps its own branch of revisions rooted at
    ``0001``, so ``heads`` upgrades them all.
    """
    command.upgrade(alembic_config(engine), "heads")


def connect_and_migrate(cfg: Config) -> Engine:
    engine = make_engine(cfg.database_url)
    migrate(engine)
    return engine
