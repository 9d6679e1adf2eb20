"""directory: tenants, domains, mailboxes, aliases

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_now = sa.func.current_timestamp()


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("display_name", sa.String(200), nullable=False, server_default=""),
        sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("created_at", sa.DateTime, nullable=False, server_default=_now),
        sa.PrimaryKeyConstraint("id", name="pk_tenants"),
        sa.UniqueConstraint("name", name="uq_tenants_name"),
    )
    op.create_table(
        "domains",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(253), nullable=False),
        sa.Column("tenant_id", sa.Integer, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("catchall", sa.String(320), nullable=True),
        sa.Column("plus_separator", sa.String(4), nullable=False, server_default="+"),
        sa.Column("postmaster", sa.String(320), nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False, server_default=_now),
        sa.PrimaryKeyConstraint("id", name="pk_domains"),
        sa.UniqueConstraint("name", name="uq_domains_name"),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE",
                                name="fk_domains_tenant_id_tenants"),
    )
    op.create_index("ix_domains_tenant_id", "domains", ["tenant_id"])
    op.create_table(
        "mailboxes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("domain_id", sa.Integer, nullable=False),
        sa.Column("local_part", sa.String(64), nullable=False),
        sa.Column("password_hash", sa.String(512), nullable=True),
        sa.Column("quota_bytes", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("created_at", sa.DateTime, nullable=False, server_default=_now),
        sa.PrimaryKeyConstraint("id", name="pk_mailboxes"),
        sa.UniqueConstraint("domain_id", "local_part", name="uq_mailboxes_address"),
        sa.ForeignKeyConstraint(["domain_id"], ["domains.id"], ondelete="CASCADE",
                                name="fk_mailboxes_domain_id_domains"),
    )
    op.create_table(
        "aliases",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("domain_id", sa.Integer, nullable=False),
        sa.Column("local_part", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False, server_default=_now),
        sa.PrimaryKeyConstraint("id", name="pk_aliases"),
        sa.UniqueConstraint("domain_id", "local_part", name="uq_aliases_address"),
        sa.ForeignKeyConstraint(["domain_id"], ["domains.id"], ondelete="CASCADE",
                                name="fk_aliases_domain_id_domains"),
    )
    op.create_table(
        "alias_targets",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("alias_id", sa.Integer, nullable=False),
        sa.Column("target", sa.String(320), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_alias_targets"),
        sa.ForeignKeyConstraint(["alias_id"], ["aliases.id"], ondelete="CASCADE",
                                name="fk_alias_targets_alias_id_aliases"),
    )
    op.create_index("ix_alias_targets_alias_id", "alias_targets", ["alias_id"])
    op.create_table(
        "directory_state",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("generation", sa.BigInteger, nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("id", name="pk_directory_state"),
    )
    op.execute("INSERT INTO directory_state (id, generation) VALUES (1, 0)")


def downgrade() -> None:
    for table in ("directory_state", "alias_targets", "aliases", "mailboxes", "domains", "tenants"):
        op.drop_table(table)
