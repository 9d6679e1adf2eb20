"""outbound: a bind address per transport rule, the local address of its connections (IP pools)

Revision ID: 0008_transport_bind
Revises: 0007_tenant_suppression_policy
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_transport_bind"
down_revision = "0007_tenant_suppression_policy"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("transports", sa.Column("bind_address", sa.String(45), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("transports") as batch:
        batch.drop_column("bind_address")
