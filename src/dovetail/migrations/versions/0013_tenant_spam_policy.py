"""directory: each tenant's spam score thresholds (reject, greylist, rewrite subject, add header → Junk)
and what the replies engine does with a message flagged as spam (an event or nothing)

Revision ID: 0013_tenant_spam_policy
Revises: 0012_mta_sts_and_reports
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_tenant_spam_policy"
down_revision = "0012_mta_sts_and_reports"
branch_labels = None
depends_on = None

THRESHOLDS = ("spam_reject", "spam_greylist", "spam_rewrite_subject", "spam_add_header")


def upgrade() -> None:
    # Plain ADD COLUMNs: nullable or with a constant default, so SQLite rebuilds nothing.
    for name in THRESHOLDS:
        op.add_column("tenants", sa.Column(name, sa.Float, nullable=True))
    op.add_column("tenants", sa.Column("reply_spam", sa.String(8), nullable=False, server_default="event"))


def downgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        for name in (*THRESHOLDS, "reply_spam"):
            batch.drop_column(name)
