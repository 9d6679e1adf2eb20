"""The replies engine seen from outbound: campaign registry, delivery-event sink and suppression list.

Implements the small protocols of ``dovetail.outbound.events`` (``CampaignRegistry``,
``EventSink``, ``Suppressions``) on top of the registry, so the send service records each message
per recipient, the relay's ids (SES's rewritten Message-ID, the relay queue id) reach the registry
for threading, and suppressed addresses are left out of new sends.

Every delivery event becomes a ``message.*`` webhook event (:mod:`.outcomes`): delivered, deferred
(with the attempt and the next try), bounced (a hard one also suppresses the address, in the same
transaction) and suppressed, whether the send API or submission left the address out. The VERP
token of a message (``bounce+<token>@``) is derived from its reply token here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from dovetail.log import get_logger

from . import outcomes, tokens
from .pipeline import add_suppression
from .registry import RegistryError, tenant_id
from .schema import outbound_messages, suppressions
from .service import RepliesService
from .text import normalize_msgid

log = get_logger("replies")


class OutboundBridge:
    def __init__(self, service: RepliesService) -> None:
        self.service = service

    def new_reply_token(self, tenant: str) -> str:
        """A tamper-evident (HMAC) token for ``reply+<token>@``, bound to the tenant."""
        return self.service.registry.new_reply_token(tenant)

    def unsubscribe_token(self, tenant: str, reply_token: str, recipient: str) -> str:
        """The one-click unsubscribe token (RFC 8058 link) of ``recipient`` of the message with ``reply_token``."""
        return tokens.new_unsubscribe_token(self.service.registry.secret, self._tenant_id(tenant),
                                            reply_token.strip().lower(), recipient)

    def register_outbound(self, *, tenant: str, message_id: str, sender: str, recipients: list[str],
                          campaign: str | None, contact: str | None, tags: list[str],
                          reply_token: str | None, subject: str = "") -> None:
        ours = reply_token is not None and tokens.verify_token(
            self.service.registry.secret, self._tenant_id(tenant), reply_token.strip().lower())
        for rcpt in recipients[:1000]:
            try:
                self.service.registry.register_outbound(
                    tenant, campaign, message_id=message_id, recipient=rcpt, contact=contact, subject=subject,
                    reply_token=reply_token, foreign_token=not ours)
            except RegistryError as exc:
                log.warning("not registered", tenant=tenant, message_id=message_id, rcpt=rcpt, error=str(exc))

    def bounce_token(self, tenant: str, reply_token: str) -> str | None:
        """The VERP token for ``bounce+<token>@`` of the message carrying ``reply_token``."""
        return tokens.bounce_token(self.service.registry.secret, self._tenant_id(tenant), reply_token)

    def _tenant_id(self, tenant: str) -> int:
        try:
            with self.service.engine.connect() as conn:
                return tenant_id(conn, tenant)
        except RegistryError:
            return -1

    def outbound_events(self, events: list[Any]) -> None:
        """Record one delivery call's events in one transaction (one commit however many recipients)."""
        wanted = [ev for ev in events if ev.tenant and (ev.message_id or ev.kind == "suppressed")]
        if not wanted:
            return
        with self.service.engine.begin() as conn:
            tids: dict[str, int] = {}
            for ev in wanted:
                try:
                    tid = tids.get(ev.tenant) or tids.setdefault(ev.tenant, tenant_id(conn, ev.tenant))
                except RegistryError as exc:
                    log.warning("delivery event ignored", qid=ev.queue_id, error=str(exc))
                    continue
                if ev.relay_queue_id or ev.provider_message_id:
                    _set_relay_ids(conn, tid, ev)
                outcome = self._outcome(conn, tid, ev)
                if outcome is not None:
                    outcomes.record(conn, tid, ev.tenant, outcome)

    @staticmethod
    def _outcome(conn: Any, tid: int, ev: Any) -> outcomes.Outcome | None:
        common = dict(recipient=ev.recipient, message_id=ev.message_id, campaign=ev.campaign,
                      contact=getattr(ev, "contact", None), queue_id=ev.queue_id, sender=ev.sender, relay=ev.relay,
                      relay_queue_id=ev.relay_queue_id, provider_message_id=ev.provider_message_id,
                      status=ev.dsn, response=ev.reason)
        attempt = getattr(ev, "attempt", 0) or None
        if ev.kind == "delivered":
            return outcomes.Outcome(outcomes.DELIVERED, **common, details={"attempt": attempt})
        if ev.kind == "deferred":
            return outcomes.Outcome(outcomes.DEFERRED, **common, details={
                "attempt": attempt, "next_attempt_at": outcomes.iso(getattr(ev, "next_attempt", None))})
        if ev.kind == "bounced":
            hard = str(ev.dsn).startswith("5")
            # A hard bounce suppresses its address, unless the content was refused (5.6.x: the message
            # was at fault, e.g. one that could not be signed), which says nothing about the address.
            if hard and not str(ev.dsn).startswith("5.6."):
                add_suppression(conn, tid, ev.recipient, "hard_bounce", f"outbound:{ev.queue_id}")
            return outcomes.Outcome(outcomes.BOUNCED, **common, details={
                "attempt": attempt,
                "bounce": {"type": "hard" if hard else "soft", "status": ev.dsn, "remote_mta": ev.relay,
                           "diagnostic": ev.reason, "source": "smtp"}})
        if ev.kind == "suppressed":
            row = conn.execute(sa.select(suppressions.c.reason, suppressions.c.created_at).where(
                suppressions.c.tenant_id == tid, suppressions.c.address == ev.recipient.strip().lower())).first()
            return outcomes.Outcome(outcomes.SUPPRESSED, **common, details={"suppression": {
                "reason": row.reason if row is not None else None,
                "since": row.created_at.isoformat() if row is not None and row.created_at else None}})
        return None

    def suppressed(self, tenant: str, addresses: Iterable[str]) -> set[str]:
        return set(self.suppression_reasons(tenant, addresses))

    def suppression_reasons(self, tenant: str, addresses: Iterable[str]) -> dict[str, str]:
        """{address as given: reason} for those of ``addresses`` on the tenant's list; one query on the
        (tenant, address) unique index for all of them."""
        wanted = {a.strip().lower(): a for a in list(addresses)[:10_000]}
        if not wanted:
            return {}
        with self.service.engine.connect() as conn:
            try:
                tid = tenant_id(conn, tenant)
            except RegistryError:
                return {}
            found = conn.execute(sa.select(suppressions.c.address, suppressions.c.reason).where(
                suppressions.c.tenant_id == tid, suppressions.c.address.in_(list(wanted)))).all()
        return {wanted[row.address]: row.reason for row in found}


def _set_relay_ids(conn: Any, tid: int, ev: Any) -> None:
    """What the relay assigned (SES rewrites Message-IDs), for threading replies to it."""
    values: dict[str, Any] = {}
    if ev.provider_message_id:
        values["relay_message_id"] = normalize_msgid(ev.provider_message_id)
    if ev.relay_queue_id:
        values["relay_queue_id"] = str(ev.relay_queue_id)[:200]
    conn.execute(outbound_messages.update().where(
        outbound_messages.c.tenant_id == tid, outbound_messages.c.message_id == normalize_msgid(ev.message_id),
        outbound_messages.c.recipient == ev.recipient.strip().lower()).values(**values))
