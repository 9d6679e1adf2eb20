"""mx: greylist triplets and clients; per-tenant and per-domain greylisting switch

Revision ID: 0014_greylist
Revises: 0013_tenant_spam_policy
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014_greylist"
down_revision = "0013_tenant_spam_policy"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "greylist",
        sa.Column("network", sa.String(64), nullable=False),
        sa.Column("sender", sa.String(320), nullable=False),
        sa.Column("recipient", sa.String(320), nullable=False),
        sa.Column("first_seen", sa.Float, nullable=False),
        sa.Column("last_seen", sa.Float, nullable=False),
        sa.Column("passed", sa.Integer, nullable=False, server_default="0"),
        sa.Column("expires", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("network", "sender", "recipient", name="pk_greylist"),
    )
    op.create_index("ix_greylist_expires", "greylist", ["expires"])
    op.create_table(
        "greylist_clients",
        sa.Column("network", sa.String(64), primary_key=True),
        sa.Column("passes", sa.Integer, nullable=False, server_default="0"),
        sa.Column("allowed", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("last_seen", sa.Float, nullable=False),
        sa.Column("expires", sa.Float, nullable=False),
    )
    op.create_index("ix_greylist_clients_expires", "greylist_clients", ["expires"])
    # Plain ADD COLUMNs (NULL: inherit from the tenant, then from mx.greylist.enabled): a batch rebuild
    # would drop tables other tables reference.
    op.add_column("tenants", sa.Column("greylist", sa.Boolean, nullable=True))
    op.add_column("domains", sa.Column("greylist", sa.Boolean, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("domains") as batch:
        batch.drop_column("greylist")
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("greylist")
    op.drop_table("greylist_clients")
    op.drop_table("greylist")
