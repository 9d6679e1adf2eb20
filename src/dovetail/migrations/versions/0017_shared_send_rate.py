"""outbound: per-minute send counters a PostgreSQL cluster shares (one row per tenant and minute)

Revision ID: 0017_shared_send_rate
Revises: 0016_sealed_keys
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017_shared_send_rate"
down_revision = "0016_sealed_keys"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # No foreign key: rows live a few minutes and are pruned by the limiter; a deleted tenant's go with them.
    op.create_table(
        "send_rate",
        sa.Column("tenant_id", sa.Integer, nullable=False),
        sa.Column("minute", sa.BigInteger, nullable=False),
        sa.Column("messages", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "minute", name="pk_send_rate"),
    )


def downgrade() -> None:
    op.drop_table("send_rate")
