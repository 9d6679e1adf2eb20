"""Tables of the reports other mail systems send us: DMARC aggregate (RFC 7489 §7.2) and TLS-RPT (RFC 8460).

Created by the migration ``0012_mta_sts_and_reports``. A report is keyed by the domain it is about
(A-label, as the directory stores it) and by the reporter's (org_name, report_id), which is how a
report sent twice is recognised. They hold no foreign key into the directory: which tenant may read a
domain's reports is the directory's answer at read time. ``day`` is the UTC day the report's range
begins, what the pages and the API group by.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()
_now = sa.func.current_timestamp()

dmarc_reports = sa.Table(
    "dmarc_reports", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("domain", sa.String(253), nullable=False),
    sa.Column("day", sa.Date, nullable=False),
    sa.Column("org_name", sa.String(255), nullable=False),
    sa.Column("report_id", sa.String(255), nullable=False),
    sa.Column("begin_at", sa.DateTime, nullable=False),
    sa.Column("end_at", sa.DateTime, nullable=False),
    sa.Column("policy", sa.String(12), nullable=False, server_default=""),  # p= as the reporter saw it
    sa.Column("received_at", sa.DateTime, nullable=False, server_default=_now),
    sa.UniqueConstraint("domain", "org_name", "report_id", name="uq_dmarc_reports_id"),
)

dmarc_report_rows = sa.Table(
    "dmarc_report_rows", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("report_id", sa.Integer, sa.ForeignKey("dmarc_reports.id", ondelete="CASCADE"), nullable=False),
    sa.Column("source_ip", sa.String(45), nullable=False),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("disposition", sa.String(12), nullable=False),  # none | quarantine | reject
    sa.Column("header_from", sa.String(253), nullable=False, server_default=""),
    sa.Column("dkim_aligned", sa.Boolean, nullable=False),  # policy_evaluated: DKIM passed and aligned
    sa.Column("spf_aligned", sa.Boolean, nullable=False),
    sa.Column("dkim_result", sa.String(12), nullable=False, server_default=""),  # auth_results, unaligned
    sa.Column("spf_result", sa.String(12), nullable=False, server_default=""),
)

tls_reports = sa.Table(
    "tls_reports", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("domain", sa.String(253), nullable=False),  # the policy-domain
    sa.Column("day", sa.Date, nullable=False),
    sa.Column("org_name", sa.String(255), nullable=False),
    sa.Column("report_id", sa.String(255), nullable=False),
    sa.Column("begin_at", sa.DateTime, nullable=False),
    sa.Column("end_at", sa.DateTime, nullable=False),
    sa.Column("policy_type", sa.String(16), nullable=False),  # sts | tlsa | no-policy-found
    sa.Column("success_count", sa.Integer, nullable=False),
    sa.Column("failure_count", sa.Integer, nullable=False),
    sa.Column("received_at", sa.DateTime, nullable=False, server_default=_now),
    sa.UniqueConstraint("domain", "org_name", "report_id", "policy_type", name="uq_tls_reports_id"),
)

tls_report_failures = sa.Table(
    "tls_report_failures", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("report_id", sa.Integer, sa.ForeignKey("tls_reports.id", ondelete="CASCADE"), nullable=False),
    sa.Column("result_type", sa.String(64), nullable=False),  # starttls-not-supported, certificate-expired, ...
    sa.Column("sending_mta_ip", sa.String(45), nullable=False, server_default=""),
    sa.Column("receiving_mx_hostname", sa.String(253), nullable=False, server_default=""),
    sa.Column("count", sa.Integer, nullable=False),
)

# Mail to a report address that held no report we could read: kept in the intake Maildir, listed here.
report_rejects = sa.Table(
    "report_rejects", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("recipient", sa.String(320), nullable=False),
    sa.Column("message_key", sa.String(255), nullable=False),
    sa.Column("reason", sa.String(500), nullable=False),
    sa.Column("received_at", sa.DateTime, nullable=False, server_default=_now),
)
