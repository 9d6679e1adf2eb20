"""outbound: DKIM keys, SMTP credentials, transports, idempotency keys, send counters and limits

Revision ID: 0004
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0001"
branch_labels = ("outbound",)
depends_on = None

_now = sa.func.current_timestamp()


def _fk(column: str, table: str, source: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint([column], [f"{table}.id"], ondelete="CASCADE",
                                   name=f"fk_{source}_{column}_{table}")


def upgrade() -> None:
    op.create_table(
        "dkim_keys",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("domain_id", sa.Integer, nullable=False),
        sa.Column("selector", sa.String(63), nullable=False),
        sa.Column("algorithm", sa.String(20), nullable=False),
        sa.Column("public_key", sa.Text, nullable=False),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False, server_default=_now),
        sa.Column("activated_at", sa.DateTime, nullable=True),
        sa.Column("retired_at", sa.DateTime, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_dkim_keys"),
        sa.UniqueConstraint("domain_id", "selector", name="uq_dkim_keys_selector"),
        _fk("domain_id", "domains", "dkim_keys"),
    )
    op.create_index("ix_dkim_keys_domain_id", "dkim_keys", ["domain_id"])
    op.create_table(
        "smtp_credentials",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("tenant_id", sa.Integer, nullable=False),
        sa.Column("username", sa.String(128), nullable=False),
        sa.Column("password_hash", sa.String(512), nullable=False),
        sa.Column("description", sa.String(200), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime, nullable=False, server_default=_now),
        sa.PrimaryKeyConstraint("id", name="pk_smtp_credentials"),
        sa.UniqueConstraint("username", name="uq_smtp_credentials_username"),
        _fk("tenant_id", "tenants", "smtp_credentials"),
    )
    op.create_index("ix_smtp_credentials_tenant_id", "smtp_credentials", ["tenant_id"])
    op.create_table(
        "transports",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("scope", sa.String(10), nullable=False),
        sa.Column("match", sa.String(320), nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("host", sa.String(253), nullable=True),
        sa.Column("port", sa.Integer, nullable=True),
        sa.Column("tls", sa.String(10), nullable=False, server_default="starttls"),
        sa.Column("username", sa.String(320), nullable=True),
        sa.Column("secret", sa.String(512), nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False, server_default=_now),
        sa.PrimaryKeyConstraint("id", name="pk_transports"),
        sa.UniqueConstraint("scope", "match", name="uq_transports_match"),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("tenant_id", sa.Integer, nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("response", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False, server_default=_now),
        sa.PrimaryKeyConstraint("id", name="pk_idempotency_keys"),
        sa.UniqueConstraint("tenant_id", "key", name="uq_idempotency_keys_key"),
        _fk("tenant_id", "tenants", "idempotency_keys"),
    )
    op.create_table(
        "send_counters",
        sa.Column("tenant_id", sa.Integer, nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("messages", sa.BigInteger, nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("tenant_id", "day", name="pk_send_counters"),
        _fk("tenant_id", "tenants", "send_counters"),
    )
    op.create_table(
        "send_limits",
        sa.Column("tenant_id", sa.Integer, nullable=False),
        sa.Column("per_minute", sa.Integer, nullable=False, server_default="0"),
        sa.Column("per_day", sa.Integer, nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("tenant_id", name="pk_send_limits"),
        _fk("tenant_id", "tenants", "send_limits"),
    )


def downgrade() -> None:
    for table in ("send_limits", "send_counters", "idempotency_keys", "transports", "smtp_credentials",
                  "dkim_keys"):
        op.drop_table(table)
