"""The migration creates exactly what ``replies/schema.py`` declares, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Engine

from dovetail.directory.schema import metadata
from dovetail.replies.schema import ALL_TABLES


def test_migration_matches_schema(engine: Engine) -> None:
    names = {t.name for t in ALL_TABLES}
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)

    def mine(op: object) -> bool:
        text = repr(op)
        return any(f"'{n}'" in text or f"name='{n}'" in text for n in names)

    ours = [d for d in diff if mine(d[0] if isinstance(d, list) else d)]
    assert ours == []
    with engine.connect() as conn:
        present = set(conn.dialect.get_table_names(conn))
    assert names <= present
