"""One-click unsubscribe (RFC 8058): check a link's token, suppress its recipient, report it once.

A token (see :mod:`.tokens`) names a tenant, an issue day and the reply token of one outbound message; its
MAC also covers the recipient, whose address comes from the campaign registry, never from the request.
So a link cannot be turned against another address, another tenant or another installation, and a forged
or altered one costs at most one indexed lookup. The check is the same for the confirmation page (``GET``,
which never changes anything: mail scanners follow links) and the ``POST`` that unsubscribes. The
suppression and the ``unsubscribe`` event go into one transaction with the webhook deliveries of the
durable outbox; a repeated ``POST`` finds the unsubscribe recorded (:mod:`.optout`) and emits nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from dovetail.directory import lookups
from dovetail.log import get_logger

from . import optout, tokens
from .dbretry import retry
from .outbox import Outbox
from .registry import Outbound, outbound_by_id
from .schema import campaigns, events, outbound_messages

log = get_logger("replies")

EVENT_TYPE = "unsubscribe"


class UnsubscribeRefused(Exception):
    """A link that unsubscribes nobody: ``status`` 404 (not ours, altered, unknown) or 410 (expired)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


@dataclass(frozen=True)
class Target:
    """Who a valid link unsubscribes, from whom."""

    tenant_id: int
    tenant: str
    address: str
    outbound: Outbound
    campaign: str | None


@dataclass(frozen=True)
class Outcome:
    target: Target
    new: bool  # False: already unsubscribed, nothing emitted
    event_id: str | None


NOT_VALID = "This unsubscribe link is not valid: it was not issued here, or it was altered."


class OneClick:
    def __init__(self, engine: Engine, secret: bytes, *, lifetime_days: int,
                 clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.secret = secret
        self.lifetime_days = lifetime_days
        self.clock = clock

    def resolve(self, token: str) -> Target:
        """The recipient and message a link names; raises :class:`UnsubscribeRefused`. Changes nothing."""
        with self.engine.connect() as conn:
            return self._resolve(conn, token)

    def _resolve(self, conn: Connection, token: str) -> Target:
        parsed = tokens.parse_unsubscribe_token(token) if len(token) < 200 else None
        if parsed is None or not tokens.verify_token(self.secret, parsed.tenant_id, parsed.reply_token):
            raise UnsubscribeRefused(404, NOT_VALID)
        rows = conn.execute(sa.select(outbound_messages.c.id, outbound_messages.c.recipient).where(
            outbound_messages.c.tenant_id == parsed.tenant_id,
            outbound_messages.c.reply_token == parsed.reply_token).order_by(outbound_messages.c.id).limit(1000)).all()
        row = next((r for r in rows if tokens.unsubscribe_mac_ok(self.secret, parsed, r.recipient)), None)
        ref = lookups.tenant_ref(conn, parsed.tenant_id) if row is not None else None
        outbound = outbound_by_id(conn, row.id) if row is not None else None
        if row is None or ref is None or outbound is None:
            raise UnsubscribeRefused(404, NOT_VALID)
        age = int(self.clock() // 86400) - parsed.issued_day
        if age > self.lifetime_days or age < -1:
            raise UnsubscribeRefused(410, f"This unsubscribe link has expired (links work for {self.lifetime_days} "
                                          "days). Reply to the message to ask the sender to stop.")
        campaign = None
        if outbound.campaign_id is not None:
            campaign = conn.execute(sa.select(campaigns.c.name).where(campaigns.c.id == outbound.campaign_id)).scalar()
        return Target(ref.id, ref.name, outbound.recipient, outbound, campaign)

    def unsubscribe(self, token: str) -> Outcome:
        """Suppress the link's recipient and emit one ``unsubscribe`` event (blocking)."""
        outcome = retry(lambda: self._unsubscribe(token))
        if outcome.new:
            log.info("unsubscribed", tenant=outcome.target.tenant, address=outcome.target.address,
                     message_id=outcome.target.outbound.message_id, method="one-click", event_id=outcome.event_id)
        return outcome

    def _unsubscribe(self, token: str) -> Outcome:
        with self.engine.begin() as conn:
            target = self._resolve(conn, token)
            ob = target.outbound
            if not optout.record_unsubscribe(conn, target.tenant_id, target.address, f"one-click:{ob.id}"):
                return Outcome(target, False, None)
            event_id = "evt_" + secrets.token_hex(12)
            payload = {
                "id": event_id, "type": EVENT_TYPE, "timestamp": dt.datetime.now(dt.UTC).isoformat(),
                "tenant": target.tenant,
                "data": {
                    "campaign": {"id": ob.campaign_id, "name": target.campaign} if ob.campaign_id else None,
                    "outbound_message": {"id": ob.id, "message_id": ob.message_id, "recipient": ob.recipient,
                                         "contact": ob.contact, "step": ob.step},
                    "thread": None, "reply": None,
                    "unsubscribe": {"address": target.address, "method": "one-click"},
                },
            }
            conn.execute(events.insert().values(id=event_id, tenant_id=target.tenant_id, type=EVENT_TYPE,
                                                reply_id=None, campaign_id=ob.campaign_id,
                                                payload=json.dumps(payload, default=str)))
            Outbox.enqueue(conn, target.tenant_id, event_id, EVENT_TYPE, self.clock())
        return Outcome(target, True, event_id)
