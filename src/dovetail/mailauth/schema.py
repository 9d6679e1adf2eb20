"""Tables of the login counters that a cluster shares in its PostgreSQL database.

On one machine the failure ledger and the connection slots live in small SQLite files under ``run/``
(:mod:`dovetail.mailauth.failures`, :mod:`dovetail.mailauth.slots`); nodes sharing a PostgreSQL
directory count them here instead, so a client gets one allowance for the whole cluster, as Dovecot's
anvil gives one per server.
"""

from __future__ import annotations

import sqlalchemy as sa

from dovetail.directory.schema import metadata

auth_failures = sa.Table(
    "auth_failures", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("key", sa.String(400), nullable=False),  # "user:<name>" or "ip:<address>"
    sa.Column("at", sa.Float, nullable=False),
    sa.Index("ix_auth_failures_key_at", "key", "at"),
    sa.Index("ix_auth_failures_at", "at"),
)

connection_slots = sa.Table(
    "connection_slots", metadata,
    sa.Column("service", sa.String(32), nullable=False),
    sa.Column("key", sa.String(400), nullable=False),
    sa.Column("node", sa.String(64), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("n", sa.Integer, nullable=False),
    sa.PrimaryKeyConstraint("service", "key", "node", "pid", name="pk_connection_slots"),
)
