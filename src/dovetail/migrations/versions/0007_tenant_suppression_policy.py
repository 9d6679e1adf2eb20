"""directory: each tenant chooses what submission does with a suppressed recipient (reject or drop)

Revision ID: 0007_tenant_suppression_policy
Revises: 0006_dmarc_enforce
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_tenant_suppression_policy"
down_revision = "0006_dmarc_enforce"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN (a constant default needs no table rebuild, so SQLite's foreign keys are untouched).
    op.add_column("tenants", sa.Column("suppressed_recipients", sa.String(8), nullable=False,
                                       server_default="reject"))


def downgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("suppressed_recipients")
