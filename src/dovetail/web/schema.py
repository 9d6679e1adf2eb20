"""Tables of the web admin (migration ``0003``): users, API tokens, sessions, mail-flow counters."""

from __future__ import annotations

import sqlalchemy as sa

from ..directory.schema import tenants

metadata = sa.MetaData()

_now = sa.func.current_timestamp()

web_users = sa.Table(
    "web_users", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("email", sa.String(320), nullable=False, unique=True),
    sa.Column("password_hash", sa.String(512), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),  # admin | tenant_admin
    sa.Column("tenant_id", sa.Integer, sa.ForeignKey(tenants.c.id, ondelete="CASCADE"), nullable=True),
    sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("created_at", sa.DateTime, nullable=False, server_default=_now),
    sa.Column("last_login_at", sa.DateTime, nullable=True),
)

api_tokens = sa.Table(
    "api_tokens", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(100), nullable=False, server_default=""),
    sa.Column("prefix", sa.String(16), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("scope", sa.String(16), nullable=False),  # admin | tenant
    sa.Column("tenant_id", sa.Integer, sa.ForeignKey(tenants.c.id, ondelete="CASCADE"), nullable=True),
    sa.Column("created_at", sa.DateTime, nullable=False, server_default=_now),
    sa.Column("last_used_at", sa.DateTime, nullable=True),
    sa.Column("revoked_at", sa.DateTime, nullable=True),
)

web_sessions = sa.Table(
    "web_sessions", metadata,
    sa.Column("id", sa.String(64), primary_key=True),  # sha256 of the cookie value
    sa.Column("user_id", sa.Integer, sa.ForeignKey(web_users.c.id, ondelete="CASCADE"), nullable=False),
    sa.Column("csrf", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False, server_default=_now),
    sa.Column("expires_at", sa.DateTime, nullable=False),
)

mail_counters = sa.Table(
    "mail_counters", metadata,
    sa.Column("minute", sa.BigInteger, primary_key=True),  # Unix time // 60
    sa.Column("counter", sa.String(32), primary_key=True),
    sa.Column("n", sa.BigInteger, nullable=False, server_default="0"),
)
