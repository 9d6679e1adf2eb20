"""directory: tenant moves between mailbox nodes (move records, delivery pause, transfer endpoints)

Revision ID: 0015_tenant_moves
Revises: 0014_greylist
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015_tenant_moves"
down_revision = "0014_greylist"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tenant_moves",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("target", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("files", sa.Integer, nullable=False, server_default="0"),
        sa.Column("bytes", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("note", sa.Text, nullable=False, server_default=""),
        sa.PrimaryKeyConstraint("id", name="pk_tenant_moves"),
    )
    op.create_index("ix_tenant_moves_tenant", "tenant_moves", ["tenant"])
    # Plain ADD COLUMNs: no rebuild of the tenants table, which other tables reference.
    op.add_column("tenants", sa.Column("paused", sa.Boolean, nullable=False, server_default=sa.false()))
    op.add_column("tenants", sa.Column("moved_from", sa.String(64), nullable=True))
    op.add_column("nodes", sa.Column("transfer", sa.String(300), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("transfer")
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("moved_from")
        batch.drop_column("paused")
    op.drop_index("ix_tenant_moves_tenant", "tenant_moves")
    op.drop_table("tenant_moves")
