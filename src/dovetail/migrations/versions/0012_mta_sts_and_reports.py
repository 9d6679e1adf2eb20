"""directory: MTA-STS mode per domain; reports: DMARC aggregate and TLS-RPT reports received

Revision ID: 0012_mta_sts_and_reports
Revises: 0011_dmarc_enforce_tenant
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_mta_sts_and_reports"
down_revision = "0011_dmarc_enforce_tenant"
branch_labels = None
depends_on = None

_now = sa.func.current_timestamp()


def upgrade() -> None:
    # A plain ADD COLUMN: a batch rebuild of ``domains`` would drop the table the mailboxes reference.
    op.add_column("domains", sa.Column("mta_sts_mode", sa.String(8), nullable=False, server_default="testing"))
    op.create_table(
        "dmarc_reports",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("domain", sa.String(253), nullable=False),
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("org_name", sa.String(255), nullable=False),
        sa.Column("report_id", sa.String(255), nullable=False),
        sa.Column("begin_at", sa.DateTime, nullable=False),
        sa.Column("end_at", sa.DateTime, nullable=False),
        sa.Column("policy", sa.String(12), nullable=False, server_default=""),
        sa.Column("received_at", sa.DateTime, nullable=False, server_default=_now),
        sa.UniqueConstraint("domain", "org_name", "report_id", name="uq_dmarc_reports_id"),
    )
    op.create_index("ix_dmarc_reports_domain_day", "dmarc_reports", ["domain", "day"])
    op.create_table(
        "dmarc_report_rows",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("report_id", sa.Integer, sa.ForeignKey("dmarc_reports.id", ondelete="CASCADE"), nullable=False,
                  index=True),
        sa.Column("source_ip", sa.String(45), nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("disposition", sa.String(12), nullable=False),
        sa.Column("header_from", sa.String(253), nullable=False, server_default=""),
        sa.Column("dkim_aligned", sa.Boolean, nullable=False),
        sa.Column("spf_aligned", sa.Boolean, nullable=False),
        sa.Column("dkim_result", sa.String(12), nullable=False, server_default=""),
        sa.Column("spf_result", sa.String(12), nullable=False, server_default=""),
    )
    op.create_table(
        "tls_reports",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("domain", sa.String(253), nullable=False),
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("org_name", sa.String(255), nullable=False),
        sa.Column("report_id", sa.String(255), nullable=False),
        sa.Column("begin_at", sa.DateTime, nullable=False),
        sa.Column("end_at", sa.DateTime, nullable=False),
        sa.Column("policy_type", sa.String(16), nullable=False),
        sa.Column("success_count", sa.Integer, nullable=False),
        sa.Column("failure_count", sa.Integer, nullable=False),
        sa.Column("received_at", sa.DateTime, nullable=False, server_default=_now),
        sa.UniqueConstraint("domain", "org_name", "report_id", "policy_type", name="uq_tls_reports_id"),
    )
    op.create_index("ix_tls_reports_domain_day", "tls_reports", ["domain", "day"])
    op.create_table(
        "tls_report_failures",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("report_id", sa.Integer, sa.ForeignKey("tls_reports.id", ondelete="CASCADE"), nullable=False,
                  index=True),
        sa.Column("result_type", sa.String(64), nullable=False),
        sa.Column("sending_mta_ip", sa.String(45), nullable=False, server_default=""),
        sa.Column("receiving_mx_hostname", sa.String(253), nullable=False, server_default=""),
        sa.Column("count", sa.Integer, nullable=False),
    )
    op.create_table(
        "report_rejects",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("recipient", sa.String(320), nullable=False),
        sa.Column("message_key", sa.String(255), nullable=False),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("received_at", sa.DateTime, nullable=False, server_default=_now),
    )


def downgrade() -> None:
    for table in ("report_rejects", "tls_report_failures", "tls_reports", "dmarc_report_rows", "dmarc_reports"):
        op.drop_table(table)
    with op.batch_alter_table("domains") as batch:
        batch.drop_column("mta_sts_mode")
