"""directory: per-domain switch for enforcing senders' DMARC policies at intake

Revision ID: 0006_dmarc_enforce
Revises: 0005_transport_state
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_dmarc_enforce"
down_revision = "0005_transport_state"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN: a batch rebuild of ``domains`` would drop the table the mailboxes reference.
    op.add_column("domains", sa.Column("dmarc_enforce", sa.Boolean, nullable=False, server_default=sa.true()))


def downgrade() -> None:
    with op.batch_alter_table("domains") as batch:
        batch.drop_column("dmarc_enforce")
