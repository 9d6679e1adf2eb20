"""directory: DMARC enforcement per tenant, and a domain's own setting may be left unset (follow its tenant)

Revision ID: 0011_dmarc_enforce_tenant
Revises: 0010_cluster_counters
Create Date: 2026-12-06

``tenants.dmarc_enforce`` is new (NULL: follow ``mx.dmarc_enforce``). ``domains.dmarc_enforce`` becomes
nullable (NULL: follow the tenant): the old column was ``true`` unless someone turned a domain off, and
a ``true`` could not tell "on" from "never set", so ``true`` becomes NULL and ``false`` stays ``false``.
That keeps every domain's behaviour: before, enforcement was the global key AND the domain's flag.

SQLite cannot drop NOT NULL in place and a batch rebuild of ``domains`` is not allowed (mailboxes and
aliases reference it), so the column is replaced with plain ALTER TABLE statements both engines know:
add a nullable twin, copy, drop the old one, rename the twin.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_dmarc_enforce_tenant"
down_revision = "0010_cluster_counters"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tenants", sa.Column("dmarc_enforce", sa.Boolean, nullable=True))
    op.add_column("domains", sa.Column("dmarc_enforce_setting", sa.Boolean, nullable=True))
    op.execute(sa.text("UPDATE domains SET dmarc_enforce_setting = :off WHERE dmarc_enforce = :off")
               .bindparams(off=False))
    op.execute("ALTER TABLE domains DROP COLUMN dmarc_enforce")
    op.execute("ALTER TABLE domains RENAME COLUMN dmarc_enforce_setting TO dmarc_enforce")


def downgrade() -> None:
    op.add_column("domains", sa.Column("dmarc_enforce_flag", sa.Boolean, nullable=False, server_default=sa.true()))
    op.execute(sa.text("UPDATE domains SET dmarc_enforce_flag = :off WHERE dmarc_enforce = :off")
               .bindparams(off=False))
    op.execute("ALTER TABLE domains DROP COLUMN dmarc_enforce")
    op.execute("ALTER TABLE domains RENAME COLUMN dmarc_enforce_flag TO dmarc_enforce")
    op.execute("ALTER TABLE tenants DROP COLUMN dmarc_enforce")
