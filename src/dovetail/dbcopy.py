"""Copy a single node's database into the cluster's PostgreSQL: the step from one node to several.

A single installation keeps its directory, campaigns, replies, webhook outbox and the rest in SQLite;
a cluster shares one PostgreSQL. ``dovetail db copy --to URL`` brings both schemas to the current
migration, then copies every table's rows in foreign-key order inside **one** target transaction
(a failure leaves the target as it was) and moves PostgreSQL's sequences past the copied ids, so the
first tenant added afterwards does not collide. The target must hold no directory yet: merging two
installations is not a copy.

Rows go through SQLAlchemy Core with reflected tables, so each column's value is converted by the two
dialects (SQLite's 0/1 booleans and text timestamps become PostgreSQL's types), in batches of
``BATCH`` rows so large reply and event tables stream. Key files stay files: on PostgreSQL ``dovetail
serve`` seals them into the database at its first start (see :mod:`dovetail.vault`).
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .db import migrate

BATCH = 1000
SKIPPED = frozenset({"alembic_version"})
DIRECTORY_TABLES = ("tenants", "domains", "mailboxes")  # a target holding any of these is in use
Progress = Callable[[str, int, int], None]  # (table, rows copied so far, rows in the table)


class CopyError(RuntimeError):
    """The copy cannot start (the target is in use, or the two are one database); nothing was written."""


def _counts(conn: sa.Connection, tables: list[sa.Table]) -> dict[str, int]:
    return {t.name: int(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar() or 0) for t in tables}


def copy_database(source: Engine, target: Engine, progress: Progress | None = None) -> dict[str, int]:
    """Copy every row of ``source`` into ``target``; returns rows copied per table."""
    if source.url.render_as_string() == target.url.render_as_string():
        raise CopyError("the source and the target are the same database")
    migrate(source)
    migrate(target)
    src, dst = sa.MetaData(), sa.MetaData()
    src.reflect(source)
    dst.reflect(target)
    tables = [t for t in dst.sorted_tables if t.name in src.tables and t.name not in SKIPPED]
    copied: dict[str, int] = {}
    with source.connect() as sconn, target.begin() as dconn:
        in_use = [name for name in DIRECTORY_TABLES if name in dst.tables
                  and dconn.execute(sa.select(sa.func.count()).select_from(dst.tables[name])).scalar()]
        if in_use:
            raise CopyError(f"the target database already holds a directory (rows in {', '.join(in_use)}): "
                            "copy into a new, empty database")
        totals = _counts(sconn, [src.tables[t.name] for t in tables])
        for table in reversed(tables):  # what the migrations seeded gives way to the source's rows
            dconn.execute(table.delete())
        for table in tables:
            origin = src.tables[table.name]
            columns = [c.name for c in table.columns if c.name in origin.c]
            result = sconn.execution_options(stream_results=True).execute(
                sa.select(*(origin.c[c] for c in columns)))
            done = 0
            while batch := result.fetchmany(BATCH):
                dconn.execute(table.insert(), [dict(zip(columns, row, strict=True)) for row in batch])
                done += len(batch)
                if progress:
                    progress(table.name, done, totals[table.name])
            if progress and not done:
                progress(table.name, 0, 0)
            copied[table.name] = done
        if target.dialect.name == "postgresql":
            _advance_sequences(dconn, tables)
    return copied


def _advance_sequences(conn: sa.Connection, tables: list[sa.Table]) -> None:
    """Set each serial/identity sequence past the largest copied id (the next insert would collide)."""
    for table in tables:
        for column in table.primary_key.columns:
            if not isinstance(column.type, sa.Integer):
                continue
            seq = conn.execute(sa.text("SELECT pg_get_serial_sequence(:t, :c)"),
                               {"t": table.name, "c": column.name}).scalar()
            if not seq:
                continue
            top = conn.execute(sa.select(sa.func.max(column))).scalar()
            conn.execute(sa.text("SELECT setval(CAST(:s AS regclass), :v, :called)"),
                         {"s": seq, "v": int(top) if top is not None else 1, "called": top is not None})
