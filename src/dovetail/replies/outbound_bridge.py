"""The replies engine seen from outbound: campaign registry, delivery-event sink and suppression list.

Implements the small protocols of ``dovetail.outbound.events`` (``CampaignRegistry``,
``EventSink``, ``Suppressions``) on top of the registry, so the send service records each message
per recipient, the relay's ids (SES's rewritten Message-ID, the relay queue id) reach the registry
for threading, and suppressed addresses are left out of new sends.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from dovetail.log import get_logger

from . import tokens
from .pipeline import add_suppression
from .registry import RegistryError, tenant_id
from .schema import suppressions
from .service import RepliesService

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

    def _tenant_id(self, tenant: str) -> int:
        try:
            with self.service.engine.connect() as conn:
                return tenant_id(conn, tenant)
        except RegistryError:
            return -1

    def outbound_events(self, events: list[Any]) -> None:
        for ev in events:
            if not ev.tenant or not ev.message_id:
                continue
            try:
                if ev.relay_queue_id or ev.provider_message_id:
                    self.service.registry.set_relay_ids(ev.tenant, ev.message_id, recipient=ev.recipient,
                                                        relay_message_id=ev.provider_message_id,
                                                        relay_queue_id=ev.relay_queue_id)
                # A hard bounce suppresses its address, unless the content was refused (5.6.x: the message
                # was at fault, e.g. one that could not be signed), which says nothing about the address.
                if ev.kind == "bounced" and str(ev.dsn).startswith("5") and not str(ev.dsn).startswith("5.6."):
                    with self.service.engine.begin() as conn:
                        add_suppression(conn, tenant_id(conn, ev.tenant), ev.recipient, "hard_bounce",
                                        f"outbound:{ev.queue_id}")
            except RegistryError as exc:
                log.warning("delivery event ignored", qid=ev.queue_id, error=str(exc))

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
