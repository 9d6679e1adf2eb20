"""replies: the hand-over queue of locally delivered replies (recorded at delivery, worked off by the replies service)

Revision ID: 0018_reply_handovers
Revises: 0017_shared_send_rate
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018_reply_handovers"
down_revision = "0017_shared_send_rate"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reply_handovers",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("node", sa.String(200), nullable=False, server_default=""),
        sa.Column("tenant", sa.String(200), nullable=False),
        sa.Column("mailbox", sa.String(320), nullable=False),
        sa.Column("maildir", sa.Text, nullable=False),
        sa.Column("item", sa.String(400), nullable=False),
        sa.Column("folder", sa.String(500), nullable=False, server_default="INBOX"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime, nullable=False, server_default=sa.func.current_timestamp()),
    )
    op.create_index("ix_reply_handovers_node_id", "reply_handovers", ["node", "id"])


def downgrade() -> None:
    op.drop_index("ix_reply_handovers_node_id", table_name="reply_handovers")
    op.drop_table("reply_handovers")
