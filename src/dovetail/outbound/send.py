"""The send service behind ``POST /api/v1/messages``: checks, MIME, campaign registry, queue.

Order: the From: domain must be one of the tenant's (tenants are walls); suppressed recipients
are dropped (each reported as a ``suppressed`` delivery event); the idempotency key is claimed;
limits consumed; the message is built, queued durably (``open_incoming`` → commit) and registered
with the campaign registry. A repeated key with the same request returns the first answer and
queues nothing; with a different request it is a conflict.

When the campaign registry mints tamper-evident tokens, the envelope sender is the VERP address
``bounce+<token>@<sender domain>`` (see ``compose.verp_address``), which the directory routes to the
tenant's replies intake: an asynchronous bounce is matched to its message and recipient there.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from dovetail.directory import Directory, TenantRef
from dovetail.log import get_logger
from dovetail.outbound.compose import Draft, build, new_message_id, new_token, parse_mailbox, render, verp_address
from dovetail.outbound.events import CampaignRegistry, DeliveryEvent, EventSink, Suppressions
from dovetail.outbound.limits import SendLimiter
from dovetail.outbound.schema import idempotency_keys
from dovetail.outbound.unsubscribe import one_click_url
from dovetail.queue import Envelope, Queue, QueueRecipient

log = get_logger("send")
MAX_RECIPIENTS = 1000
MAX_BATCH = 1000


class SendError(Exception):
    """A refused send. ``status`` is the HTTP status the API answers with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class SendRequest:
    draft: Draft
    campaign: str | None = None
    contact: str | None = None
    tags: list[str] = field(default_factory=list)
    track_replies: bool = False  # Reply-To: reply+<token>@<from domain>
    unsubscribe: bool = True  # campaign mail: List-Unsubscribe (+ -Post with the https one-click link)


@dataclass
class SendResult:
    message_id: str | None
    queue_id: str | None
    accepted: list[str]
    suppressed: list[str]
    reply_token: str | None = None
    replayed: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class SendService:
    def __init__(self, engine: Engine, queue: Queue, *, limiter: SendLimiter | None = None,
                 suppressions: Suppressions | None = None, registry: CampaignRegistry | None = None,
                 public_url: str | None = None, events: EventSink | None = None) -> None:
        """``public_url`` is the web listener's public base URL (``web.public_url``): with it, campaign mail
        to one recipient carries the RFC 8058 one-click link ``<public_url>/unsubscribe/<token>``; ``events``
        hears of each suppressed recipient left out of a message."""
        self.engine = engine
        self.directory = Directory(engine)
        self.queue = queue
        self.limiter = limiter or SendLimiter(engine)
        self.suppressions = suppressions
        self.registry = registry
        self.public_url = public_url
        self.events = events

    # --- checks --------------------------------------------------------------------------------

    def _owner(self, domain: str) -> str | None:
        return self.directory.domain_tenant(domain, enabled_only=True)

    def _claim(self, tenant_id: int, key: str, digest: str) -> SendResult | None:
        """Claim the key (None), or the stored answer of the first request with it."""
        if not key or len(key) > 200:
            raise SendError(422, "idempotency key must be 1-200 characters")
        with self.engine.begin() as conn:
            try:
                with conn.begin_nested():
                    conn.execute(idempotency_keys.insert().values(tenant_id=tenant_id, key=key, request_hash=digest,
                                                                  response=""))
                return None
            except IntegrityError:
                row = conn.execute(sa.select(idempotency_keys.c.request_hash, idempotency_keys.c.response)
                                   .where(idempotency_keys.c.tenant_id == tenant_id,
                                          idempotency_keys.c.key == key)).first()
        if row is None:
            raise SendError(409, "idempotency key is being used, retry")
        if row.request_hash != digest:
            raise SendError(409, "idempotency key was already used with a different request")
        if not row.response:
            raise SendError(409, "a request with this idempotency key is still in progress")
        result = SendResult(**json.loads(row.response))
        result.replayed = True
        return result

    def _store(self, tenant_id: int, key: str, result: SendResult | None) -> None:
        with self.engine.begin() as conn:
            where = (idempotency_keys.c.tenant_id == tenant_id) & (idempotency_keys.c.key == key)
            if result is None:
                conn.execute(idempotency_keys.delete().where(where))
            else:
                conn.execute(idempotency_keys.update().where(where).values(response=json.dumps(result.to_json())))

    def _tenant(self, tenant: str) -> TenantRef:
        """The tenant named ``tenant`` (any case: the API and CLI take it as people type it)."""
        found = self.directory.tenant_ref(tenant)
        if found is None:
            raise SendError(404, f"no such tenant {tenant!r}")
        return found

    # --- sending -------------------------------------------------------------------------------

    def send(self, tenant: str, req: SendRequest, idempotency_key: str | None = None,
             fingerprint: Any = None) -> SendResult:
        """Queue one message; blocking (call it from a thread in async code)."""
        ref = self._tenant(tenant)
        tid, tenant = ref.id, ref.name
        digest = hashlib.sha256(json.dumps(fingerprint if fingerprint is not None else asdict(req),
                                           sort_keys=True, default=str).encode()).hexdigest()
        if idempotency_key is not None:
            stored = self._claim(tid, idempotency_key, digest)
            if stored is not None:
                return stored
        try:
            result = self._send(tenant, req)
        except BaseException:
            if idempotency_key is not None:
                self._store(tid, idempotency_key, None)
            raise
        if idempotency_key is not None:
            self._store(tid, idempotency_key, result)
        return result

    def _send(self, tenant: str, req: SendRequest) -> SendResult:
        draft = req.draft
        try:
            _, sender = parse_mailbox(draft.from_, "from")
            rcpts = [parse_mailbox(a, field_)[1] for field_, lst in (("to", draft.to), ("cc", draft.cc),
                                                                      ("bcc", draft.bcc)) for a in lst]
        except ValueError as exc:
            raise SendError(422, str(exc)) from None
        domain = sender.rpartition("@")[2]
        if self._owner(domain) != tenant:
            raise SendError(403, f"from: {domain} is not a sending domain of tenant {tenant}")
        rcpts = list(dict.fromkeys(rcpts))
        if len(rcpts) > MAX_RECIPIENTS:
            raise SendError(422, f"at most {MAX_RECIPIENTS} recipients per message")
        suppressed = sorted(self.suppressions.suppressed(tenant, rcpts)) if self.suppressions and rcpts else []
        keep = [r for r in rcpts if r not in set(suppressed)]
        if not keep:
            if not rcpts:
                raise SendError(422, "to: at least one recipient is needed")
            self._report_suppressed(tenant, req, sender, None, None, suppressed)
            return SendResult(None, None, [], suppressed)
        refused = self.limiter.consume(tenant, len(keep))
        if refused:
            raise SendError(429, refused.message)
        message_id = new_message_id(domain)
        minted = getattr(self.registry, "new_reply_token", None)
        token = minted(tenant) if minted is not None else new_token()  # tamper-evident when replies run
        if req.track_replies:
            draft = dataclasses.replace(draft, reply_to=f"reply+{token}@{domain}")
        unsub: list[str] = []
        if req.unsubscribe and req.campaign:
            # A one-click link names the one address it unsubscribes, so only a message to one recipient has it.
            one_click = getattr(self.registry, "unsubscribe_token", None)
            if self.public_url and one_click is not None and minted is not None and len(keep) == 1:
                unsub.append(one_click_url(self.public_url, one_click(tenant, token, keep[0])))
            unsub.append(f"mailto:unsubscribe+{token}@{domain}")
        # Suppressed addresses leave the envelope; To:/Cc: headers keep what the caller wrote.
        try:
            msg = build(draft, message_id=message_id, unsubscribe=unsub)
        except ValueError as exc:
            raise SendError(422, str(exc)) from None
        data = msg.as_bytes()
        extra = {"tenant": tenant}
        if req.campaign:
            extra["campaign"] = req.campaign[:200]
        if req.contact:
            extra["contact"] = req.contact[:200]
        minted_bounce = getattr(self.registry, "bounce_token", None)
        bounce_token = minted_bounce(tenant, token) if minted_bounce is not None else None
        envelope_sender = verp_address(bounce_token, domain) if bounce_token else sender
        if envelope_sender != sender:
            extra["sender"] = sender  # transports route by the author, not by the VERP return path
        env = Envelope(sender=envelope_sender, recipients=[QueueRecipient(r) for r in keep], extra=extra,
                       protocol="HTTP")
        qid = self.queue.inject(env, data)
        log.info(f"message-id={message_id}, from=<{envelope_sender}>, nrcpt={len(keep)}, api", qid=qid)
        if self.registry is not None:
            extra_fields = {"subject": req.draft.subject or ""} if minted else {}
            self.registry.register_outbound(tenant=tenant, message_id=message_id, sender=sender, recipients=keep,
                                            campaign=req.campaign, contact=req.contact, tags=list(req.tags),
                                            reply_token=token, **extra_fields)
        self._report_suppressed(tenant, req, sender, message_id, qid, suppressed)
        return SendResult(message_id, qid, keep, suppressed, token)

    def _report_suppressed(self, tenant: str, req: SendRequest, sender: str, message_id: str | None,
                           qid: str | None, suppressed: list[str]) -> None:
        if self.events is None or not suppressed:
            return
        events = [DeliveryEvent("suppressed", qid or "", rcpt, sender, message_id, "5.7.1",
                                "recipient is on the suppression list", tenant=tenant, campaign=req.campaign,
                                contact=req.contact) for rcpt in suppressed]
        try:
            self.events.outbound_events(events)
        except Exception as exc:  # noqa: BLE001 - the send stands; the event sink logs its own trouble
            log.warning(f"suppression events not recorded: {exc}", tenant=tenant)

    def send_batch(self, tenant: str, req: SendRequest, recipients: list[tuple[str, dict[str, str]]],
                   idempotency_key: str | None = None) -> list[SendResult | SendError]:
        """One message per recipient with ``{{variable}}`` substitution in subject, text and html.

        The idempotency key of item ``i`` is ``<key>:<i>``, so a retried batch queues only what is new.
        """
        if not recipients or len(recipients) > MAX_BATCH:
            raise SendError(422, f"recipients: 1 to {MAX_BATCH} entries")
        out: list[SendResult | SendError] = []
        base = req.draft
        for i, (to, variables) in enumerate(recipients):
            draft = Draft(from_=base.from_, to=[to], subject=render(base.subject, variables) or "",
                          text=render(base.text, variables), html=render(base.html, variables),
                          headers=dict(base.headers), attachments=list(base.attachments))
            one = SendRequest(draft, req.campaign, variables.get("contact", req.contact), list(req.tags),
                              req.track_replies, req.unsubscribe)
            key = f"{idempotency_key}:{i}" if idempotency_key else None
            try:
                out.append(self.send(tenant, one, key))
            except SendError as exc:
                out.append(exc)
        return out
