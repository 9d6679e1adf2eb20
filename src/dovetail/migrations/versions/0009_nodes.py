"""directory: the cluster's node list, and each tenant's home mailbox node

Revision ID: 0009_nodes
Revises: 0008_transport_bind
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_nodes"
down_revision = "0008_transport_bind"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "nodes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("roles", sa.String(128), nullable=False),
        sa.Column("lmtp", sa.String(300), nullable=True),
        sa.Column("imap", sa.String(300), nullable=True),
        sa.Column("state", sa.String(16), nullable=False, server_default="active"),
        sa.Column("created_at", sa.DateTime, nullable=False, server_default=sa.func.current_timestamp()),
        sa.PrimaryKeyConstraint("id", name="pk_nodes"),
        sa.UniqueConstraint("name", name="uq_nodes_name"),
    )
    # A plain ADD COLUMN: no rebuild of the tenants table, which other tables reference.
    op.add_column("tenants", sa.Column("home_node", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("home_node")
    op.drop_table("nodes")
