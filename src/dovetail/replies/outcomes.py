"""Delivery outcomes as webhook events: ``message.delivered``/``deferred``/``bounced``/``suppressed``/``complained``.

Each is written with :func:`record` inside the caller's transaction (the one that also adds the
suppression, or stores the bounce that reported it), as an ``events`` row plus one pending
``webhook_deliveries`` row per subscribed endpoint, so it is as durable as the replies' events and
signed and retried by the same dispatcher.

A bounce may be reported twice: by the relay's synchronous ``5xx`` and by a DSN arriving later at the
VERP address (our own queue sends one too). ``message.bounced`` is written once per message and
recipient and bounce type: the first report claims the key
``outcome:bounced:<type>:<message-id>:<recipient>`` in ``processed_messages`` (unique per tenant),
and later ones find it taken. The type is part of the key so that a soft bounce (a delay report)
does not hide the hard one that may follow it.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from .outbox import Outbox
from .schema import campaigns, events, outbound_messages, processed_messages
from .text import normalize_msgid

DELIVERED, DEFERRED, BOUNCED = "message.delivered", "message.deferred", "message.bounced"
SUPPRESSED, COMPLAINED = "message.suppressed", "message.complained"
MESSAGE_EVENT_TYPES = (DELIVERED, DEFERRED, BOUNCED, SUPPRESSED, COMPLAINED)


@dataclass
class Outcome:
    """What happened to one message for one recipient; ``details`` holds the type's own fields
    (``attempt``/``next_attempt_at``, ``bounce``, ``suppression``, ``complaint``)."""

    type: str
    recipient: str
    message_id: str | None
    campaign: str | None = None  # name, when the sender knew it
    contact: str | None = None
    queue_id: str | None = None
    sender: str | None = None
    relay: str | None = None  # host[ip]:port
    relay_queue_id: str | None = None
    provider_message_id: str | None = None
    status: str | None = None  # enhanced status code of the remote reply
    response: str | None = None  # the remote reply's text
    details: dict[str, Any] = field(default_factory=dict)


def bounce_key(message_id: str, recipient: str, bounce_type: str) -> str:
    return f"outcome:bounced:{bounce_type}:{normalize_msgid(message_id)}:{recipient.strip().lower()}"[:1100]


def _claim(conn: Connection, tid: int, key: str) -> bool:
    """Take ``key`` for this tenant; False when an earlier report took it."""
    taken = conn.execute(sa.select(processed_messages.c.id).where(
        processed_messages.c.tenant_id == tid, processed_messages.c.key == key)).first()
    if taken is not None:
        return False
    try:
        with conn.begin_nested():
            conn.execute(processed_messages.insert().values(tenant_id=tid, key=key, reply_id=None))
    except IntegrityError:
        return False
    return True


def _outbound_row(conn: Connection, tid: int, message_id: str | None, recipient: str) -> Any:
    mid = normalize_msgid(message_id or "")
    if not mid:
        return None
    return conn.execute(outbound_messages.select().where(
        outbound_messages.c.tenant_id == tid,
        sa.or_(outbound_messages.c.message_id == mid, outbound_messages.c.relay_message_id == mid),
        outbound_messages.c.recipient == recipient.strip().lower()).order_by(outbound_messages.c.id)).first()


def _campaign(conn: Connection, tid: int, campaign_id: int | None, name: str | None) -> dict[str, Any] | None:
    q = sa.select(campaigns.c.id, campaigns.c.name).where(campaigns.c.tenant_id == tid)
    if campaign_id is not None:
        row = conn.execute(q.where(campaigns.c.id == campaign_id)).first()
    elif name:
        row = conn.execute(q.where(campaigns.c.name == name[:200])).first()
    else:
        return None
    if row is None:
        return {"id": None, "name": name} if name else None
    return {"id": row.id, "name": row.name}


def record(conn: Connection, tid: int, tenant: str, outcome: Outcome, *, now: float | None = None,
           reply_id: int | None = None) -> str | None:
    """Write the event of ``outcome`` and its webhook deliveries; the event id, or ``None`` for a
    ``message.bounced`` already reported for this message and recipient."""
    now = time.time() if now is None else now
    recipient = outcome.recipient.strip().lower()
    if outcome.type == BOUNCED and outcome.message_id:
        bounce_type = str(outcome.details.get("bounce", {}).get("type", "hard"))
        if not _claim(conn, tid, bounce_key(outcome.message_id, recipient, bounce_type)):
            return None
    row = _outbound_row(conn, tid, outcome.message_id, recipient)
    campaign = _campaign(conn, tid, row.campaign_id if row is not None else None, outcome.campaign)
    event_id = "evt_" + secrets.token_hex(12)
    mid = normalize_msgid(outcome.message_id or "")
    data: dict[str, Any] = {
        "message_id": f"<{mid}>" if mid else None,  # as in the header, whoever reported it
        "queue_id": outcome.queue_id or None,
        "recipient": recipient,
        "sender": outcome.sender,
        "campaign": campaign,
        "contact": outcome.contact or (row.contact if row is not None else None),
        "outbound_message": {"id": row.id} if row is not None else None,
        "relay": {"host": outcome.relay,
                  "queue_id": outcome.relay_queue_id or (row.relay_queue_id if row is not None else None),
                  "provider_message_id": outcome.provider_message_id
                  or (f"<{row.relay_message_id}>" if row is not None and row.relay_message_id else None)},
        "response": ({"status": outcome.status, "text": outcome.response}
                     if outcome.status or outcome.response else None),
        **outcome.details,
    }
    payload = {"id": event_id, "type": outcome.type, "timestamp": dt.datetime.fromtimestamp(now, dt.UTC).isoformat(),
               "tenant": tenant, "data": data}
    conn.execute(events.insert().values(id=event_id, tenant_id=tid, type=outcome.type, reply_id=reply_id,
                                        campaign_id=campaign["id"] if campaign else None,
                                        payload=json.dumps(payload, default=str)))
    Outbox.enqueue(conn, tid, event_id, outcome.type, now)
    return event_id


def iso(ts: float | None) -> str | None:
    return None if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC).isoformat()
