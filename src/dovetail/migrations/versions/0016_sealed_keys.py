"""cluster: DKIM private keys and installation secrets sealed in the database (PostgreSQL clusters)

Revision ID: 0016_sealed_keys
Revises: 0015_tenant_moves
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016_sealed_keys"
down_revision = "0015_tenant_moves"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sealed_secrets",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False, server_default=sa.func.current_timestamp()),
        sa.PrimaryKeyConstraint("name", name="pk_sealed_secrets"),
    )
    # A plain ADD COLUMN (NULL: the key is a file under dkim/, as on every SQLite node): a batch rebuild
    # would drop tables other tables reference.
    op.add_column("dkim_keys", sa.Column("private_key", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("dkim_keys") as batch:
        batch.drop_column("private_key")
    op.drop_table("sealed_secrets")
