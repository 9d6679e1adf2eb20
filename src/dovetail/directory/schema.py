"""Tables of the directory: tenants own domains; domains hold mailboxes and aliases.

SQLAlchemy Core, not the ORM: the hot path (recipient resolution) wants plain rows and the
schema must run unchanged on SQLite and PostgreSQL. Migrations in ``dovetail/migrations``.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData(naming_convention={
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
})

_now = sa.func.current_timestamp()

tenants = sa.Table(
    "tenants", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("display_name", sa.String(200), nullable=False, server_default=""),
    sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("created_at", sa.DateTime, nullable=False, server_default=_now),
    # What submission does with a recipient on the tenant's suppression list: "reject" it at RCPT TO
    # (550 5.7.1) or "drop" it (accepted, left out of the queued message).
    sa.Column("suppressed_recipients", sa.String(8), nullable=False, server_default="reject"),
    # The mailbox node whose Maildirs hold this tenant's mail (``nodes.name``); NULL on a single node.
    sa.Column("home_node", sa.String(64), nullable=True),
    # A move's final sync runs: deliveries for the tenant are deferred (4.2.0) until its home is switched.
    sa.Column("paused", sa.Boolean, nullable=False, server_default=sa.false()),
    # The node the tenant last moved away from: that node defers (4xx) instead of refusing its mail, since a
    # sender's routing may lag the switch by a cache interval.
    sa.Column("moved_from", sa.String(64), nullable=True),
    # Senders' DMARC reject/quarantine enforced for mail to the tenant's domains; NULL: mx.dmarc_enforce
    sa.Column("dmarc_enforce", sa.Boolean, nullable=True),
    # Spam score thresholds of the MX's content filter (NULL: rspamd's own action decides), and what the
    # replies engine does with a message our filter flagged as spam: a "reply.spam" event or "drop" it.
    sa.Column("spam_reject", sa.Float, nullable=True),
    sa.Column("spam_greylist", sa.Float, nullable=True),
    sa.Column("spam_rewrite_subject", sa.Float, nullable=True),
    sa.Column("spam_add_header", sa.Float, nullable=True),
    sa.Column("reply_spam", sa.String(8), nullable=False, server_default="event"),
    # Greylisting of mail to the tenant's domains: on, off, or NULL for the MX's mx.greylist.enabled.
    sa.Column("greylist", sa.Boolean, nullable=True),
)

domains = sa.Table(
    "domains", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(253), nullable=False, unique=True),  # A-label, lowercase
    sa.Column("tenant_id", sa.Integer, sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False,
              index=True),
    sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("catchall", sa.String(320), nullable=True),
    sa.Column("plus_separator", sa.String(4), nullable=False, server_default="+"),
    sa.Column("postmaster", sa.String(320), nullable=True),
    sa.Column("created_at", sa.DateTime, nullable=False, server_default=_now),
    # DMARC policies of senders enforced for mail to this domain (reject/quarantine); off: only reported;
    # NULL: the tenant's setting, else mx.dmarc_enforce
    sa.Column("dmarc_enforce", sa.Boolean, nullable=True),
    # mode: of the MTA-STS policy served at mta-sts.<domain> (RFC 8461): testing | enforce | none
    sa.Column("mta_sts_mode", sa.String(8), nullable=False, server_default="testing"),
    # Greylisting of mail to this domain: on, off, or NULL for its tenant's setting.
    sa.Column("greylist", sa.Boolean, nullable=True),
)

mailboxes = sa.Table(
    "mailboxes", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("domain_id", sa.Integer, sa.ForeignKey("domains.id", ondelete="CASCADE"), nullable=False),
    sa.Column("local_part", sa.String(64), nullable=False),  # lowercase
    sa.Column("password_hash", sa.String(512), nullable=True),
    sa.Column("quota_bytes", sa.BigInteger, nullable=False, server_default="0"),  # 0 = unlimited
    sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("created_at", sa.DateTime, nullable=False, server_default=_now),
    sa.UniqueConstraint("domain_id", "local_part", name="uq_mailboxes_address"),
)

aliases = sa.Table(
    "aliases", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("domain_id", sa.Integer, sa.ForeignKey("domains.id", ondelete="CASCADE"), nullable=False),
    sa.Column("local_part", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False, server_default=_now),
    sa.UniqueConstraint("domain_id", "local_part", name="uq_aliases_address"),
)

alias_targets = sa.Table(
    "alias_targets", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("alias_id", sa.Integer, sa.ForeignKey("aliases.id", ondelete="CASCADE"), nullable=False,
              index=True),
    sa.Column("target", sa.String(320), nullable=False),
)

# The cluster's nodes: each has its own data directory and config; this list is how the others find it.
# ``roles`` is a comma-separated sorted subset of NODE_ROLES; ``state`` active or draining (no new
# placements). Single-node installations have no rows here.
nodes = sa.Table(
    "nodes", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("roles", sa.String(128), nullable=False),
    sa.Column("lmtp", sa.String(300), nullable=True),  # host:port of its LMTP server (mailbox role)
    sa.Column("imap", sa.String(300), nullable=True),  # host:port its IMAP logins are proxied to
    sa.Column("transfer", sa.String(300), nullable=True),  # host:port of its transfer endpoint (tenant moves)
    sa.Column("state", sa.String(16), nullable=False, server_default="active"),
    sa.Column("created_at", sa.DateTime, nullable=False, server_default=_now),
)

# Tenant moves between mailbox nodes, one row per move; the state machine ``copying`` → ``final-sync`` →
# ``switched`` → ``cleaned`` (or ``aborted``) lets a rerun of ``dovetail tenant move`` resume after a kill.
# At most one unfinished move per tenant (not ``cleaned``/``aborted``): the mover checks it in its transaction.
tenant_moves = sa.Table(
    "tenant_moves", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("tenant", sa.String(64), nullable=False, index=True),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("target", sa.String(64), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("files", sa.Integer, nullable=False, server_default="0"),
    sa.Column("bytes", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("note", sa.Text, nullable=False, server_default=""),
)

# One row; bumped by every directory write so other processes drop their caches.
directory_state = sa.Table(
    "directory_state", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("generation", sa.BigInteger, nullable=False, server_default="0"),
)
