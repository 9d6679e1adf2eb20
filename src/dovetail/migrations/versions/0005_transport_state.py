"""outbound: a generation counter for the transport table, so a change applies at the next check

Revision ID: 0005_transport_state
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_transport_state"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "transport_state",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("generation", sa.BigInteger, nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("id", name="pk_transport_state"),
    )
    op.execute("INSERT INTO transport_state (id, generation) VALUES (1, 0)")


def downgrade() -> None:
    op.drop_table("transport_state")
