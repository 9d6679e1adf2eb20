"""Tables of the replies engine: campaigns, outbound messages, threads, replies, events, webhooks.

SQLAlchemy Core on the shared ``metadata`` so one Alembic environment sees every area; the
migration ``0002_replies`` creates exactly these tables. Every table carries ``tenant_id`` (or
hangs off a row that does) because tenants are walls: each query filters on it.

Message-IDs are stored without angle brackets. JSON-ish columns are ``Text`` holding JSON so the
schema runs unchanged on SQLite and PostgreSQL.
"""

from __future__ import annotations

import sqlalchemy as sa

from dovetail.directory.schema import metadata

_now = sa.func.current_timestamp()


def _tenant() -> sa.Column:
    return sa.Column("tenant_id", sa.Integer, sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False)


campaigns = sa.Table(
    "campaigns", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    _tenant(),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("window_days", sa.Integer, nullable=False, server_default="60"),  # weak subject match window
    sa.Column("created_at", sa.DateTime, nullable=False, server_default=_now),
    sa.UniqueConstraint("tenant_id", "name", name="uq_campaigns_tenant_name"),
)

outbound_messages = sa.Table(
    "outbound_messages", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    _tenant(),
    sa.Column("campaign_id", sa.Integer, sa.ForeignKey("campaigns.id", ondelete="CASCADE"), nullable=True),
    sa.Column("message_id", sa.String(998), nullable=False),
    sa.Column("relay_message_id", sa.String(998), nullable=True),
    sa.Column("relay_queue_id", sa.String(200), nullable=True),
    sa.Column("recipient", sa.String(320), nullable=False),  # lowercase
    sa.Column("contact", sa.String(200), nullable=True),  # the caller's own contact id
    sa.Column("step", sa.Integer, nullable=False, server_default="0"),
    sa.Column("subject", sa.Text, nullable=False, server_default=""),
    sa.Column("subject_key", sa.String(300), nullable=False, server_default=""),
    sa.Column("sent_at", sa.DateTime, nullable=False, server_default=_now),
    sa.Column("reply_token", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False, server_default=_now),
    # One row per recipient: a message sent to several people is several outbound messages.
    sa.UniqueConstraint("tenant_id", "message_id", "recipient", name="uq_outbound_messages_tenant_mid"),
    sa.Index("ix_outbound_messages_reply_token", "reply_token"),
    sa.Index("ix_outbound_messages_relay_mid", "tenant_id", "relay_message_id"),
    sa.Index("ix_outbound_messages_recipient", "tenant_id", "recipient"),
    sa.Index("ix_outbound_messages_campaign", "campaign_id"),
)

threads = sa.Table(
    "threads", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    _tenant(),
    sa.Column("campaign_id", sa.Integer, sa.ForeignKey("campaigns.id", ondelete="SET NULL"), nullable=True),
    sa.Column("outbound_id", sa.Integer, sa.ForeignKey("outbound_messages.id", ondelete="SET NULL"),
              nullable=True),
    sa.Column("contact", sa.String(320), nullable=False, server_default=""),
    sa.Column("subject", sa.Text, nullable=False, server_default=""),
    sa.Column("reply_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", sa.DateTime, nullable=False, server_default=_now),
    sa.Column("last_reply_at", sa.DateTime, nullable=True),
    sa.Index("ix_threads_contact", "tenant_id", "campaign_id", "contact"),
)

replies = sa.Table(
    "replies", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    _tenant(),
    sa.Column("thread_id", sa.Integer, sa.ForeignKey("threads.id", ondelete="SET NULL"), nullable=True),
    sa.Column("campaign_id", sa.Integer, sa.ForeignKey("campaigns.id", ondelete="SET NULL"), nullable=True),
    sa.Column("outbound_id", sa.Integer, sa.ForeignKey("outbound_messages.id", ondelete="SET NULL"),
              nullable=True),
    sa.Column("source", sa.String(400), nullable=False),
    sa.Column("message_id", sa.String(998), nullable=True),
    sa.Column("kind", sa.String(32), nullable=False),  # human, auto_reply, bounce, unsubscribe, complaint, challenge
    sa.Column("bounce_type", sa.String(8), nullable=True),  # hard / soft
    sa.Column("match_method", sa.String(32), nullable=False),  # in_reply_to, references, token, subject, none
    sa.Column("match_strength", sa.String(8), nullable=False),  # strong, weak, none
    sa.Column("from_addr", sa.String(320), nullable=False, server_default=""),
    sa.Column("from_name", sa.Text, nullable=False, server_default=""),
    sa.Column("to_addrs", sa.Text, nullable=False, server_default="[]"),
    sa.Column("subject", sa.Text, nullable=False, server_default=""),
    sa.Column("date", sa.DateTime, nullable=True),
    sa.Column("stripped_text", sa.Text, nullable=False, server_default=""),
    sa.Column("text_body", sa.Text, nullable=False, server_default=""),
    sa.Column("html_body", sa.Text, nullable=False, server_default=""),
    sa.Column("headers", sa.Text, nullable=False, server_default="[]"),
    sa.Column("attachments", sa.Text, nullable=False, server_default="[]"),
    sa.Column("details", sa.Text, nullable=False, server_default="{}"),  # bounce/complaint/auto-reply facts
    sa.Column("auth_results", sa.Text, nullable=False, server_default="[]"),
    sa.Column("size", sa.Integer, nullable=False, server_default="0"),
    sa.Column("received_at", sa.DateTime, nullable=False, server_default=_now),
    sa.Index("ix_replies_thread", "thread_id"),
    sa.Index("ix_replies_campaign", "tenant_id", "campaign_id"),
    sa.Index("ix_replies_message_id", "tenant_id", "message_id"),
)

events = sa.Table(
    "events", metadata,
    sa.Column("id", sa.String(64), primary_key=True),  # evt_..., the webhook-id and idempotency key
    _tenant(),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("reply_id", sa.Integer, sa.ForeignKey("replies.id", ondelete="CASCADE"), nullable=True),
    sa.Column("campaign_id", sa.Integer, sa.ForeignKey("campaigns.id", ondelete="SET NULL"), nullable=True),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False, server_default=_now),
    sa.Index("ix_events_tenant_campaign", "tenant_id", "campaign_id"),
)

webhook_endpoints = sa.Table(
    "webhook_endpoints", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    _tenant(),
    sa.Column("url", sa.String(2000), nullable=False),
    sa.Column("secret", sa.String(200), nullable=False),  # whsec_<base64>
    sa.Column("event_types", sa.Text, nullable=False, server_default="*"),  # comma-separated or *
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("created_at", sa.DateTime, nullable=False, server_default=_now),
)

webhook_deliveries = sa.Table(
    "webhook_deliveries", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("event_id", sa.String(64), sa.ForeignKey("events.id", ondelete="CASCADE"), nullable=False),
    sa.Column("endpoint_id", sa.Integer, sa.ForeignKey("webhook_endpoints.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("status", sa.String(16), nullable=False, server_default="pending"),  # pending delivered gone dead
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", sa.Float, nullable=False),  # unix time
    sa.Column("locked_until", sa.Float, nullable=True),  # claim lease of a running dispatcher
    sa.Column("last_attempt_at", sa.Float, nullable=True),
    sa.Column("last_status", sa.Integer, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created_at", sa.DateTime, nullable=False, server_default=_now),
    sa.UniqueConstraint("event_id", "endpoint_id", name="uq_webhook_deliveries_event_endpoint"),
    sa.Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
)

suppressions = sa.Table(
    "suppressions", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    _tenant(),
    sa.Column("address", sa.String(320), nullable=False),  # lowercase
    sa.Column("reason", sa.String(32), nullable=False),  # hard_bounce, unsubscribe, complaint, manual
    sa.Column("source", sa.String(400), nullable=False, server_default=""),
    sa.Column("created_at", sa.DateTime, nullable=False, server_default=_now),
    sa.UniqueConstraint("tenant_id", "address", name="uq_suppressions_tenant_address"),
)

reply_inboxes = sa.Table(
    "reply_inboxes", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    _tenant(),
    sa.Column("address", sa.String(320), nullable=False),  # a Dovetail mailbox, lowercase
    sa.Column("created_at", sa.DateTime, nullable=False, server_default=_now),
    sa.UniqueConstraint("address", name="uq_reply_inboxes_address"),
)

imap_accounts = sa.Table(
    "imap_accounts", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    _tenant(),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("host", sa.String(253), nullable=False),
    sa.Column("port", sa.Integer, nullable=False),
    sa.Column("tls", sa.String(16), nullable=False, server_default="implicit"),  # implicit, starttls, none
    sa.Column("username", sa.String(320), nullable=False),
    sa.Column("password", sa.Text, nullable=False),
    sa.Column("folder", sa.String(500), nullable=False, server_default="INBOX"),
    sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created_at", sa.DateTime, nullable=False, server_default=_now),
    sa.UniqueConstraint("tenant_id", "name", name="uq_imap_accounts_tenant_name"),
)

imap_checkpoints = sa.Table(
    "imap_checkpoints", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("account_id", sa.Integer, sa.ForeignKey("imap_accounts.id", ondelete="CASCADE"), nullable=False),
    sa.Column("folder", sa.String(500), nullable=False),
    sa.Column("uidvalidity", sa.BigInteger, nullable=False),
    sa.Column("last_uid", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("updated_at", sa.DateTime, nullable=False, server_default=_now),
    sa.UniqueConstraint("account_id", "folder", name="uq_imap_checkpoints_account_folder"),
)

processed_messages = sa.Table(
    "processed_messages", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    _tenant(),
    sa.Column("key", sa.String(1100), nullable=False),  # src:<source>:<uidvalidity>:<uid> or mid:<message-id>
    sa.Column("reply_id", sa.Integer, sa.ForeignKey("replies.id", ondelete="CASCADE"), nullable=True),
    sa.Column("created_at", sa.DateTime, nullable=False, server_default=_now),
    sa.UniqueConstraint("tenant_id", "key", name="uq_processed_messages_tenant_key"),
)

ALL_TABLES = (campaigns, outbound_messages, threads, replies, events, webhook_endpoints, webhook_deliveries,
              suppressions, reply_inboxes, imap_accounts, imap_checkpoints, processed_messages)
