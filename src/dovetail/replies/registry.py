"""The campaign registry: campaigns and the outbound messages sent for them, and lookups.

The outbound engine calls :meth:`Registry.register_outbound` for each message it sends; messages
sent elsewhere are registered through the REST API. Replies are threaded against what is here.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, Row

from dovetail.dbrows import inserted_id
from dovetail.directory import lookups

from . import tokens
from .schema import campaigns, outbound_messages
from .text import normalize_msgid, subject_key

_FOREIGN_TOKEN = re.compile(r"[a-z0-9]{16,64}")


class RegistryError(ValueError):
    """A refused registry change or lookup (unknown tenant or campaign, duplicate)."""


@dataclass(frozen=True)
class Campaign:
    id: int
    tenant_id: int
    name: str
    description: str
    window_days: int
    created_at: dt.datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "description": self.description,
                "window_days": self.window_days,
                "created_at": self.created_at.isoformat() if self.created_at else None}


@dataclass(frozen=True)
class Outbound:
    id: int
    tenant_id: int
    campaign_id: int | None
    message_id: str
    relay_message_id: str | None
    relay_queue_id: str | None
    recipient: str
    contact: str | None
    step: int
    subject: str
    sent_at: dt.datetime
    reply_token: str

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "campaign_id": self.campaign_id, "message_id": self.message_id,
                "relay_message_id": self.relay_message_id, "relay_queue_id": self.relay_queue_id,
                "recipient": self.recipient, "contact": self.contact, "step": self.step, "subject": self.subject,
                "sent_at": self.sent_at.isoformat() if self.sent_at else None, "reply_token": self.reply_token}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def naive_utc(value: dt.datetime | None) -> dt.datetime | None:
    """Datetimes are stored naive in UTC (SQLite has no time zones)."""
    if value is None or value.tzinfo is None:
        return value
    return value.astimezone(dt.UTC).replace(tzinfo=None)


def tenant_id(conn: Connection, tenant: str | int) -> int:
    """The id of a tenant given by name (any case) or id."""
    found = lookups.tenant_ref(conn, tenant)
    if found is None:
        raise RegistryError(f"unknown tenant {tenant!r}")
    return found.id


def _campaign(row: Any) -> Campaign:
    return Campaign(row.id, row.tenant_id, row.name, row.description, row.window_days, row.created_at)


def _outbound(row: Any) -> Outbound:
    return Outbound(row.id, row.tenant_id, row.campaign_id, row.message_id, row.relay_message_id,
                    row.relay_queue_id, row.recipient, row.contact, row.step, row.subject, row.sent_at,
                    row.reply_token)


class Registry:
    """Campaigns and outbound messages of every tenant; one per engine, thread-safe."""

    def __init__(self, engine: Engine, secret: bytes) -> None:
        self.engine = engine
        self.secret = secret

    @classmethod
    def for_data_dir(cls, engine: Engine, data_dir: Path) -> Registry:
        return cls(engine, tokens.load_secret(data_dir, engine))

    # --- campaigns ------------------------------------------------------------------------------

    def create_campaign(self, tenant: str | int, name: str, description: str = "",
                        window_days: int = 60) -> Campaign:
        name = name.strip()
        if not name or len(name) > 200:
            raise RegistryError("a campaign name has 1 to 200 characters")
        if not 1 <= window_days <= 3650:
            raise RegistryError("window_days must be between 1 and 3650")
        with self.engine.begin() as conn:
            tid = tenant_id(conn, tenant)
            if conn.execute(sa.select(campaigns.c.id).where(campaigns.c.tenant_id == tid,
                                                            campaigns.c.name == name)).first():
                raise RegistryError(f"campaign {name!r} already exists")
            conn.execute(campaigns.insert().values(tenant_id=tid, name=name, description=description,
                                                   window_days=window_days))
            row = conn.execute(campaigns.select().where(campaigns.c.tenant_id == tid,
                                                        campaigns.c.name == name)).one()
        return _campaign(row)

    def campaign(self, tenant: str | int, campaign: str | int) -> Campaign:
        with self.engine.connect() as conn:
            return self._campaign_in(conn, tenant_id(conn, tenant), campaign)

    def _campaign_in(self, conn: Connection, tid: int, campaign: str | int) -> Campaign:
        col = campaigns.c.id if isinstance(campaign, int) else campaigns.c.name
        row = conn.execute(campaigns.select().where(campaigns.c.tenant_id == tid, col == campaign)).first()
        if row is None:
            raise RegistryError(f"unknown campaign {campaign!r}")
        return _campaign(row)

    def campaigns(self, tenant: str | int) -> list[Campaign]:
        with self.engine.connect() as conn:
            tid = tenant_id(conn, tenant)
            rows = conn.execute(campaigns.select().where(campaigns.c.tenant_id == tid).order_by(campaigns.c.id))
            return [_campaign(r) for r in rows]

    # --- outbound messages --------------------------------------------------------------------

    def new_reply_token(self, tenant: str | int) -> str:
        """A token to put in the Reply-To or return path before the message is sent and registered."""
        with self.engine.connect() as conn:
            return tokens.new_token(self.secret, tenant_id(conn, tenant))

    def register_outbound(
        self,
        tenant: str | int,
        campaign: str | int | None,
        *,
        message_id: str,
        recipient: str,
        step: int = 0,
        subject: str = "",
        sent_at: dt.datetime | None = None,
        relay_message_id: str | None = None,
        relay_queue_id: str | None = None,
        contact: str | None = None,
        reply_token: str | None = None,
        create_campaign: bool = True,
        foreign_token: bool = False,
    ) -> Outbound:
        """Record one sent message to one recipient. A campaign named but not yet known is created.

        ``reply_token`` is the one the message carries (minted by :meth:`new_reply_token`; a token from
        elsewhere is accepted with ``foreign_token=True``); a new one is minted when none is given.
        Registering the same Message-ID and recipient twice returns the first record.
        """
        mid = normalize_msgid(message_id)
        if not mid:
            raise RegistryError(f"not a Message-ID: {message_id!r}")
        rcpt = recipient.strip().lower()
        if "@" not in rcpt or len(rcpt) > 320:
            raise RegistryError(f"not an address: {recipient!r}")
        with self.engine.begin() as conn:
            tid = tenant_id(conn, tenant)
            if reply_token is not None:
                reply_token = reply_token.strip().lower()
                if foreign_token:
                    if not _FOREIGN_TOKEN.fullmatch(reply_token):
                        raise RegistryError("a reply token has 16 to 64 letters and digits")
                elif not tokens.verify_token(self.secret, tid, reply_token):
                    raise RegistryError("reply token was not minted for this tenant")
            existing = conn.execute(outbound_messages.select().where(
                outbound_messages.c.tenant_id == tid, outbound_messages.c.message_id == mid,
                outbound_messages.c.recipient == rcpt)).first()
            if existing is not None:
                return _outbound(existing)
            cid = None
            if campaign is not None:
                try:
                    cid = self._campaign_in(conn, tid, campaign).id
                except RegistryError:
                    if not create_campaign or isinstance(campaign, int):
                        raise
                    conn.execute(campaigns.insert().values(tenant_id=tid, name=str(campaign)[:200]))
                    cid = self._campaign_in(conn, tid, str(campaign)[:200]).id
            token = reply_token or tokens.new_token(self.secret, tid)
            oid = inserted_id(conn.execute(outbound_messages.insert().values(
                tenant_id=tid, campaign_id=cid, message_id=mid,
                relay_message_id=normalize_msgid(relay_message_id) if relay_message_id else None,
                relay_queue_id=relay_queue_id, recipient=rcpt, contact=contact, step=step,
                subject=subject[:2000], subject_key=subject_key(subject)[:300],
                sent_at=naive_utc(sent_at) or utcnow(), reply_token=token)))
            row = conn.execute(outbound_messages.select().where(outbound_messages.c.id == oid)).one()
        return _outbound(row)

    def set_relay_ids(self, tenant: str | int, message_id: str, *, relay_message_id: str | None = None,
                      relay_queue_id: str | None = None, recipient: str | None = None) -> bool:
        """Record what the relay assigned (SES rewrites Message-IDs) once it is known."""
        values: dict[str, Any] = {}
        if relay_message_id:
            values["relay_message_id"] = normalize_msgid(relay_message_id)
        if relay_queue_id:
            values["relay_queue_id"] = relay_queue_id[:200]
        if not values:
            return False
        with self.engine.begin() as conn:
            tid = tenant_id(conn, tenant)
            q = outbound_messages.update().where(outbound_messages.c.tenant_id == tid,
                                                 outbound_messages.c.message_id == normalize_msgid(message_id))
            if recipient:
                q = q.where(outbound_messages.c.recipient == recipient.strip().lower())
            return conn.execute(q.values(**values)).rowcount > 0

    def by_message_id(self, tenant: str | int, message_id: str) -> Outbound | None:
        """The outbound message with this Message-ID, ours or the relay's."""
        with self.engine.connect() as conn:
            return lookup_msgids(conn, tenant_id(conn, tenant), [message_id])

    def by_token(self, tenant: str | int, token: str, contact: str | None = None) -> Outbound | None:
        """The outbound message a reply token names; ``None`` for a forged or unknown token."""
        with self.engine.connect() as conn:
            return lookup_token(conn, self.secret, tenant_id(conn, tenant), token, contact)

    def outbound(self, tenant: str | int, *, campaign: str | int | None = None, limit: int = 100,
                 offset: int = 0) -> list[Outbound]:
        with self.engine.connect() as conn:
            tid = tenant_id(conn, tenant)
            q = outbound_messages.select().where(outbound_messages.c.tenant_id == tid)
            if campaign is not None:
                q = q.where(outbound_messages.c.campaign_id == self._campaign_in(conn, tid, campaign).id)
            rows = conn.execute(q.order_by(outbound_messages.c.id).limit(min(limit, 1000)).offset(offset))
            return [_outbound(r) for r in rows]


def _prefer(rows: Sequence[Row[Any]], contact: str | None) -> Outbound | None:
    """Of several rows (one message to several recipients), the one sent to ``contact``."""
    if not rows:
        return None
    for row in rows:
        if contact and row.recipient == contact:
            return _outbound(row)
    return _outbound(rows[0])


# Run for nearly every reply: built once, so SQLAlchemy finds its compiled form by the memoised key.
_BY_MSGIDS = outbound_messages.select().where(
    outbound_messages.c.tenant_id == sa.bindparam("tid"),
    sa.or_(outbound_messages.c.message_id.in_(sa.bindparam("mids", expanding=True)),
           outbound_messages.c.relay_message_id.in_(sa.bindparam("relay_mids", expanding=True))),
).order_by(outbound_messages.c.sent_at.desc(), outbound_messages.c.id.desc()).limit(200)


def lookup_msgids(conn: Connection, tid: int, message_ids: list[str], contact: str | None = None) -> Outbound | None:
    """The newest outbound message whose own or relay-assigned Message-ID is among ``message_ids``."""
    mids = [m for m in (normalize_msgid(x) for x in message_ids) if m][:100]
    if not mids:
        return None
    rows = conn.execute(_BY_MSGIDS, {"tid": tid, "mids": mids, "relay_mids": mids}).all()
    if not rows:
        return None
    newest = rows[0].message_id
    return _prefer([r for r in rows if r.message_id == newest], contact)


def lookup_token(conn: Connection, secret: bytes, tid: int, token: str, contact: str | None = None
                 ) -> Outbound | None:
    """The outbound message of a reply token. Our own (32-character) tokens must carry a valid MAC,
    so a forged one costs no query; shorter tokens minted elsewhere are matched exactly."""
    token = token.strip().lower()
    if len(token) == tokens.TOKEN_LENGTH and not tokens.verify_token(secret, tid, token):
        return None
    if not _FOREIGN_TOKEN.fullmatch(token):
        return None
    rows = conn.execute(outbound_messages.select().where(
        outbound_messages.c.tenant_id == tid, outbound_messages.c.reply_token == token)
        .order_by(outbound_messages.c.id).limit(200)).all()
    return _prefer(rows, contact)


def outbound_by_id(conn: Connection, oid: int) -> Outbound | None:
    row = conn.execute(outbound_messages.select().where(outbound_messages.c.id == oid)).first()
    return _outbound(row) if row else None
