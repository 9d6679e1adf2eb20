"""Tables of outbound sending: DKIM keys, SMTP credentials, transports, idempotency keys, send counters.

They join the directory's ``MetaData`` so foreign keys to ``tenants``/``domains`` resolve in Core
queries; the migration ``0004_outbound`` creates them (``transport_state`` came with
``0005_transport_state``, ``transports.bind_address`` with ``0008_transport_bind``). Private DKIM
keys of a single node are not stored here but on disk under ``<data>/dkim/<domain>/<selector>.key`` (mode 0600),
as OpenDKIM keeps them; a PostgreSQL cluster keeps them sealed in ``dkim_keys.private_key`` (``dovetail.vault``,
``0016_sealed_keys``).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from dovetail.directory.schema import metadata

_now = sa.func.current_timestamp()

# state: published (in DNS, not signing yet) -> active (signing) -> retiring (in DNS, not signing) -> gone
dkim_keys = sa.Table(
    "dkim_keys", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("domain_id", sa.Integer, sa.ForeignKey("domains.id", ondelete="CASCADE"), nullable=False,
              index=True),
    sa.Column("selector", sa.String(63), nullable=False),
    sa.Column("algorithm", sa.String(20), nullable=False),  # rsa-sha256 | ed25519-sha256
    sa.Column("public_key", sa.Text, nullable=False),  # base64, as published in p=
    sa.Column("state", sa.String(12), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False, server_default=_now),
    sa.Column("activated_at", sa.DateTime, nullable=True),
    sa.Column("retired_at", sa.DateTime, nullable=True),
    # PostgreSQL clusters: the PKCS#8 PEM sealed under the cluster master key (dovetail.vault); NULL: a file
    sa.Column("private_key", sa.Text, nullable=True),
    sa.UniqueConstraint("domain_id", "selector", name="uq_dkim_keys_selector"),
)

smtp_credentials = sa.Table(
    "smtp_credentials", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("tenant_id", sa.Integer, sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False,
              index=True),
    sa.Column("username", sa.String(128), nullable=False, unique=True),
    sa.Column("password_hash", sa.String(512), nullable=False),
    sa.Column("description", sa.String(200), nullable=False, server_default=""),
    sa.Column("created_at", sa.DateTime, nullable=False, server_default=_now),
)

# scope: "recipient" (a domain, or ".domain" for its subdomains), "sender" (an address), "domain" (a
# sender domain of ours), "tenant" or "default" ("*"); the order in which they apply is
# dovetail.outbound.routing's.
transports = sa.Table(
    "transports", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("scope", sa.String(10), nullable=False),
    sa.Column("match", sa.String(320), nullable=False),
    sa.Column("kind", sa.String(10), nullable=False),  # relay | mx
    sa.Column("host", sa.String(253), nullable=True),
    sa.Column("port", sa.Integer, nullable=True),
    sa.Column("tls", sa.String(10), nullable=False, server_default="starttls"),  # starttls | implicit | none
    sa.Column("username", sa.String(320), nullable=True),
    sa.Column("secret", sa.String(512), nullable=True),
    sa.Column("created_at", sa.DateTime, nullable=False, server_default=_now),
    sa.Column("bind_address", sa.String(45), nullable=True),  # local address of its connections (0006)
    sa.UniqueConstraint("scope", "match", name="uq_transports_match"),
)

# One row; bumped by every transport change and every DKIM key state change, so delivery agents in
# other processes drop their cached table and signing keys at their next check (the directory's
# generation counter, for outbound).
transport_state = sa.Table(
    "transport_state", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("generation", sa.BigInteger, nullable=False, server_default="0"),
)

idempotency_keys = sa.Table(
    "idempotency_keys", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("tenant_id", sa.Integer, sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    sa.Column("key", sa.String(200), nullable=False),
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("response", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False, server_default=_now),
    sa.UniqueConstraint("tenant_id", "key", name="uq_idempotency_keys_key"),
)

# Messages sent per tenant and UTC day: the quota counter (rate limits are in-process token buckets).
send_counters = sa.Table(
    "send_counters", metadata,
    sa.Column("tenant_id", sa.Integer, sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    sa.Column("day", sa.String(10), nullable=False),
    sa.Column("messages", sa.BigInteger, nullable=False, server_default="0"),
    sa.PrimaryKeyConstraint("tenant_id", "day", name="pk_send_counters"),
)

# Messages sent per tenant and UTC minute (epoch seconds // 60), the per-minute limit of a PostgreSQL
# cluster, counted across its nodes (migration 0017_shared_send_rate); a single node counts in process.
send_rate = sa.Table(
    "send_rate", metadata,
    sa.Column("tenant_id", sa.Integer, nullable=False),
    sa.Column("minute", sa.BigInteger, nullable=False),
    sa.Column("messages", sa.Integer, nullable=False),
    sa.PrimaryKeyConstraint("tenant_id", "minute", name="pk_send_rate"),
)

# Per-tenant limits; no row means the defaults (unlimited).
send_limits = sa.Table(
    "send_limits", metadata,
    sa.Column("tenant_id", sa.Integer, sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("per_minute", sa.Integer, nullable=False, server_default="0"),  # 0: unlimited
    sa.Column("per_day", sa.Integer, nullable=False, server_default="0"),
)


def bump_generation(conn: Connection) -> None:
    """Tell every process that the outbound configuration (transports, signing keys) changed."""
    conn.execute(transport_state.update().values(generation=transport_state.c.generation + 1))


def generation(conn: Connection) -> int:
    return int(conn.execute(sa.select(transport_state.c.generation)).scalar_one())
