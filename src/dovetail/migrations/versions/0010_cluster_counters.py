"""mailauth: the login-failure ledger and connection slots a cluster shares in PostgreSQL

Revision ID: 0010_cluster_counters
Revises: 0009_nodes
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_cluster_counters"
down_revision = "0009_nodes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "auth_failures",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), nullable=False),
        sa.Column("key", sa.String(400), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_auth_failures"),
    )
    op.create_index("ix_auth_failures_key_at", "auth_failures", ["key", "at"])
    op.create_index("ix_auth_failures_at", "auth_failures", ["at"])
    op.create_table(
        "connection_slots",
        sa.Column("service", sa.String(32), nullable=False),
        sa.Column("key", sa.String(400), nullable=False),
        sa.Column("node", sa.String(64), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("n", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("service", "key", "node", "pid", name="pk_connection_slots"),
    )


def downgrade() -> None:
    op.drop_table("connection_slots")
    op.drop_index("ix_auth_failures_at", "auth_failures")
    op.drop_index("ix_auth_failures_key_at", "auth_failures")
    op.drop_table("auth_failures")
