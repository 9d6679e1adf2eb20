"""The replies pipeline: one inbound message in, one stored and threaded reply plus its event out.

``process_message`` parses once, threads, classifies, extracts the reply text, and then in a single
transaction stores the reply, its idempotency keys, the thread, suppressions, the event and its
webhook deliveries. Processing is idempotent: a message already seen under the same source position
(UIDVALIDITY/UID, Maildir file) or the same Message-ID returns the stored record and emits nothing.

Threading, in order: the reported original (bounces, complaints) and In-Reply-To/References against
registered Message-IDs (ours and relay-assigned) and earlier replies; a reply token in any recipient,
Delivered-To or the plus part; the same contact with the same normalised subject inside the campaign
window (a weak match); otherwise unmatched, still stored and emitted.

Mail to a VERP return path, ``bounce+<token>@`` (what the send API uses as envelope sender), is
threaded by its token alone. A bounce there fires ``message.bounced`` for each failed recipient of
that message (once per message and recipient, see :mod:`.outcomes`) and suppresses the hard ones,
instead of ``bounce.hard``/``bounce.soft``; a token whose MAC does not verify is stored but fires no
event and suppresses nobody. A complaint matched to its message also fires ``message.complained``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from dovetail.dbrows import inserted_id
from dovetail.dbwriter import write_transaction
from dovetail.directory import lookups
from dovetail.log import get_logger

from . import classify as cls
from . import optout, outcomes, tokens
from .dbretry import retry
from .extract import reply_text
from .outbox import Outbox
from .parse import Parsed, parse
from .registry import Outbound, RegistryError, lookup_msgids, lookup_token, naive_utc, outbound_by_id, utcnow
from .schema import (
    campaigns,
    events,
    outbound_messages,
    processed_messages,
    replies,
    suppressions,
    threads,
    webhook_deliveries,
)
from .text import subject_key, thread_title

log = get_logger("replies")

MAX_PAYLOAD_TEXT = 256 * 1024
STRONG, WEAK, NONE = "strong", "weak", "none"
SPAM_EVENT = "reply.spam"


@dataclass(frozen=True)
class Source:
    """Where a message came from; ``uid``/``item`` make its position unique within the source."""

    tenant: str | int
    name: str  # imap:<account id>:<folder>, local:<address>, api, ...
    uidvalidity: int | None = None
    uid: int | None = None
    item: str | None = None
    folder: str = "INBOX"  # where the copy was delivered: "Junk" when the MX judged it spam or quarantined it

    def key(self) -> str | None:
        if self.uid is not None:
            return f"src:{self.name}:{self.uidvalidity or 0}:{self.uid}"[:1100]
        if self.item:
            return f"src:{self.name}:{self.item}"[:1100]
        return None


@dataclass
class ReplyRecord:
    id: int
    tenant: str
    kind: str
    bounce_type: str | None
    match_method: str
    match_strength: str
    thread_id: int | None
    campaign_id: int | None
    outbound_id: int | None
    message_id: str
    from_addr: str
    subject: str
    stripped_text: str
    attachments: list[dict[str, Any]]
    details: dict[str, Any]
    events: list[str] = field(default_factory=list)  # event ids emitted (empty for a duplicate)
    event_type: str = ""
    duplicate: bool = False


@dataclass
class _Match:
    method: str = "none"
    strength: str = NONE
    outbound: Outbound | None = None
    thread_id: int | None = None


@dataclass(frozen=True)
class _Prepared:
    """A message parsed and classified, waiting for its transaction."""

    tid: int
    tname: str
    source: Source
    parsed: Parsed
    stripped: str
    verdict: cls.Classification
    keys: list[str]


@dataclass
class _Batch:
    """What the messages of one transaction share: lookups made once (a tenant's webhook subscriptions,
    campaigns, the idempotency keys already stored), and the key, event and delivery rows, written
    together at the end (one statement per table instead of one per message)."""

    subscriptions: dict[int, list[tuple[int, str]]] = field(default_factory=dict)
    campaigns: dict[int, dict[str, Any]] = field(default_factory=dict)
    seen: dict[tuple[int, str], int] = field(default_factory=dict)  # (tenant id, key) -> reply id
    processed: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    deliveries: list[dict[str, Any]] = field(default_factory=list)

    def seen_reply(self, tid: int, keys: list[str]) -> int | None:
        return next((self.seen[(tid, key)] for key in keys if (tid, key) in self.seen), None)

    def flush(self, conn: Connection) -> None:
        if self.processed:
            conn.execute(_INSERT_PROCESSED, self.processed)
        if self.events:
            conn.execute(_INSERT_EVENT, self.events)
        if self.deliveries:
            conn.execute(_INSERT_DELIVERY, self.deliveries)
        self.processed, self.events, self.deliveries = [], [], []


# The statements run for every reply, built once: SQLAlchemy then finds each compiled form in its cache
# from the statement object's memoised key instead of building the statement and its key per reply.
_INSERT_PROCESSED = processed_messages.insert()
_INSERT_EVENT = events.insert()
_INSERT_DELIVERY = webhook_deliveries.insert()
_INSERT_REPLY = replies.insert()
_INSERT_THREAD = threads.insert()
_SEEN = sa.select(processed_messages.c.key, processed_messages.c.reply_id).where(
    processed_messages.c.tenant_id == sa.bindparam("tid"),
    processed_messages.c.key.in_(sa.bindparam("keys", expanding=True)))
_COUNT_REPLY = threads.update().where(threads.c.id == sa.bindparam("thread")).values(
    reply_count=threads.c.reply_count + 1, last_reply_at=sa.bindparam("now"))
_THREAD_OF_CAMPAIGN = threads.select().where(
    threads.c.tenant_id == sa.bindparam("tid"), threads.c.contact == sa.bindparam("contact"),
    threads.c.campaign_id == sa.bindparam("owner")).order_by(threads.c.id).limit(1)
_THREAD_OF_OUTBOUND = threads.select().where(
    threads.c.tenant_id == sa.bindparam("tid"), threads.c.contact == sa.bindparam("contact"),
    threads.c.outbound_id == sa.bindparam("owner")).order_by(threads.c.id).limit(1)
SEEN_CHUNK = 400  # keys per lookup, well inside SQLite's limit on bound variables


@dataclass
class _Verp:
    """A message sent to ``bounce+<token>@``: the recipients of the message its token names (none when
    the token is forged or unknown)."""

    token: str
    recipients: list[Outbound] = field(default_factory=list)

    @property
    def forged(self) -> bool:
        return not self.recipients


def event_type_for(kind: str, bounce_type: str | None, matched: bool) -> str:
    if kind == cls.HUMAN:
        return "reply.received" if matched else "reply.unmatched"
    if kind in (cls.AUTO_REPLY, cls.CHALLENGE):
        return "reply.auto"
    if kind == cls.BOUNCE:
        return "bounce.soft" if bounce_type == "soft" else "bounce.hard"
    return kind  # unsubscribe, complaint


class Pipeline:
    def __init__(self, engine: Engine, secret: bytes, *, on_event: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.time, authserv_id: str = "") -> None:
        self.engine = engine
        self.authserv_id = authserv_id  # our MX's Authentication-Results are the only ones believed
        self.secret = secret
        self.on_event = on_event
        self.clock = clock

    def process_message(self, raw: bytes, source: Source) -> ReplyRecord:
        """Store and emit one inbound message (blocking: call it from a worker thread in async code)."""
        return retry(lambda: self._process([(raw, source)]))[0]

    def process_many(self, items: list[tuple[bytes, Source]], *, durable: bool = False
                     ) -> list[ReplyRecord | Exception]:
        """Store and emit several messages in one transaction: one commit (one fsync) for the lot, which
        is what lets the pipeline keep pace with intake when replies arrive in bursts. A message that
        fails spoils only itself: the batch is then run again one message per transaction.

        ``durable``: each transaction is on stable storage when this returns (see
        :func:`dovetail.dbwriter.write_transaction`), for a caller that acknowledges the messages next."""
        if not items:
            return []
        try:
            return list(retry(lambda: self._process(items, durable)))
        except Exception as exc:  # noqa: BLE001 - each message gets its own outcome below
            if len(items) == 1:
                return [exc]
        out: list[ReplyRecord | Exception] = []
        for item in items:
            try:
                out.append(self._one(item, durable))
            except Exception as exc:  # noqa: BLE001 - reported to the caller per message
                out.append(exc)
        return out

    def _one(self, item: tuple[bytes, Source], durable: bool) -> ReplyRecord:
        return retry(lambda: self._process([item], durable))[0]

    # --- steps ---------------------------------------------------------------------------------------

    def _process(self, items: list[tuple[bytes, Source]], durable: bool = False) -> list[ReplyRecord]:
        tenants: dict[str | int, tuple[int, str]] = {}  # looked up once per batch, not once per message
        with self.engine.connect() as conn:
            for _, source in items:
                if source.tenant not in tenants:
                    tenants[source.tenant] = _tenant(conn, source.tenant)
            positions = _seen_keys(conn, [(tenants[source.tenant][0], key) for _, source in items
                                          if (key := source.key())])
            prepared = [self._prepare(conn, raw, source, tenants[source.tenant], positions) for raw, source in items]
        with write_transaction(self.engine, durable=durable) as conn:
            batch = _Batch()
            # Every key of the batch looked up in one statement inside the transaction (so nothing stored
            # meanwhile is missed); the batch remembers what its own messages add.
            batch.seen = _seen_keys(conn, [(p.tid, key) for p in prepared if isinstance(p, _Prepared)
                                           for key in p.keys])
            records = [p if isinstance(p, ReplyRecord) else self._commit(conn, p, batch) for p in prepared]
            batch.flush(conn)
        for record in records:
            if record.duplicate:
                continue
            log.info("reply", tenant=record.tenant, reply=record.id, kind=record.kind, match=record.match_method,
                     message_id=record.message_id, event_type=record.event_type)
            if self.on_event is not None:
                for eid in record.events:
                    self.on_event(eid)
        return records

    def _prepare(self, conn: Connection, raw: bytes, source: Source, tenant: tuple[int, str],
                 positions: dict[tuple[int, str], int]) -> ReplyRecord | _Prepared:
        """Parse and classify (no writes): the stored record instead when the source position was seen
        (``positions``: the keys of the batch's sources already stored)."""
        tid, tname = tenant
        src_key = source.key()
        if src_key:
            seen = positions.get((tid, src_key))
            if seen is not None:
                return _record(conn, seen, tname)
        parsed = parse(raw, self.authserv_id)
        mid_key = "mid:" + parsed.message_id if parsed.message_id else "sha:" + hashlib.sha256(raw).hexdigest()
        keys = [k for k in (src_key, mid_key[:1100]) if k]
        stripped = reply_text(parsed.text, parsed.html)
        return _Prepared(tid, tname, source, parsed, stripped, cls.classify(parsed, stripped), keys)

    def _commit(self, conn: Connection, p: _Prepared, batch: _Batch) -> ReplyRecord:
        """Thread and store one prepared message inside the caller's transaction."""
        seen = batch.seen_reply(p.tid, p.keys)
        if seen is not None:
            for key in p.keys:  # remember the new position too, so the source is not re-read
                if (p.tid, key) not in batch.seen:
                    batch.seen[(p.tid, key)] = seen
                    batch.processed.append({"tenant_id": p.tid, "key": key, "reply_id": seen})
            return _record(conn, seen, p.tname)
        verp = self._verp(conn, p.tid, p.parsed)
        if verp is None:
            match = self._thread(conn, p.tid, p.parsed, p.verdict)
        elif verp.forged:
            match = _Match()
        else:
            match = _Match("verp", STRONG, _verp_outbound(verp, p.verdict))
        return self._store(conn, batch, p.tid, p.tname, p.source, p.parsed, p.stripped, p.verdict, match, p.keys,
                           verp)

    def _verp(self, conn: Connection, tid: int, parsed: Parsed) -> _Verp | None:
        """The VERP token this message was sent to (Delivered-To, as our delivery stamps it, or To:)."""
        for addr in parsed.delivered_to + parsed.to:
            token = tokens.bounce_token_of(addr.rpartition("@")[0])
            if token is None:
                continue
            reply_token = tokens.reply_token_of_bounce(self.secret, tid, token)
            if reply_token is None:
                return _Verp(token)
            rows = conn.execute(sa.select(outbound_messages.c.id).where(
                outbound_messages.c.tenant_id == tid, outbound_messages.c.reply_token == reply_token)
                .order_by(outbound_messages.c.id).limit(1000)).scalars().all()
            return _Verp(token, [ob for ob in (outbound_by_id(conn, oid) for oid in rows) if ob is not None])
        return None

    def _thread(self, conn: Connection, tid: int, parsed: Parsed, verdict: cls.Classification) -> _Match:
        groups = [("report", [verdict.original_message_id] if verdict.original_message_id else []),
                  ("in_reply_to", parsed.in_reply_to), ("references", list(reversed(parsed.references)))]
        for method, mids in groups:
            if not mids:
                continue
            outbound = lookup_msgids(conn, tid, mids, parsed.from_addr or None)
            if outbound is not None:
                return _Match(method, STRONG, outbound)
            prior = conn.execute(sa.select(replies.c.thread_id, replies.c.outbound_id).where(
                replies.c.tenant_id == tid, replies.c.message_id.in_(mids[:100]),
                replies.c.thread_id.is_not(None)).order_by(replies.c.id.desc())).first()
            if prior is not None:
                ob = outbound_by_id(conn, prior.outbound_id) if prior.outbound_id else None
                return _Match(method, STRONG if ob else NONE, ob, prior.thread_id)
        for addr in parsed.all_recipients() + ([parsed.return_path] if parsed.return_path else []):
            local = addr.split("@", 1)[0]
            candidates = tokens.find_tokens(local)
            if "+" in local:
                candidates.append(local.split("+", 1)[1])
            for token in dict.fromkeys(candidates):
                outbound = lookup_token(conn, self.secret, tid, token, parsed.from_addr)
                if outbound is not None:
                    return _Match("token", STRONG, outbound)
        key = subject_key(parsed.subject)
        contacts = [parsed.from_addr] if verdict.kind != cls.BOUNCE else [
            r["address"] for r in verdict.details.get("recipients", []) if r.get("address")]
        contacts = [c for c in contacts if c][:20]
        if key and contacts:
            when = parsed.date or utcnow()
            rows = conn.execute(
                sa.select(outbound_messages.c.id, outbound_messages.c.sent_at, campaigns.c.window_days)
                .select_from(outbound_messages.outerjoin(campaigns, campaigns.c.id == outbound_messages.c.campaign_id))
                .where(outbound_messages.c.tenant_id == tid, outbound_messages.c.recipient.in_(contacts),
                       outbound_messages.c.subject_key == key[:300], outbound_messages.c.sent_at <= when +
                       dt.timedelta(days=1))
                .order_by(outbound_messages.c.sent_at.desc())).all()
            for row in rows:
                if when - row.sent_at <= dt.timedelta(days=row.window_days or 60):
                    return _Match("subject", WEAK, outbound_by_id(conn, row.id))
        return _Match()

    def _store(self, conn: Connection, batch: _Batch, tid: int, tname: str, source: Source, parsed: Parsed,
               stripped: str,
               verdict: cls.Classification, match: _Match, keys: list[str], verp: _Verp | None = None
               ) -> ReplyRecord:
        ob = match.outbound
        campaign_id = ob.campaign_id if ob else None
        thread_id = match.thread_id or _thread_for(conn, tid, ob, parsed)
        now = utcnow()
        values = dict(
            tenant_id=tid, thread_id=thread_id, campaign_id=campaign_id, outbound_id=ob.id if ob else None,
            source=source.name[:400], message_id=parsed.message_id or None, kind=verdict.kind,
            bounce_type=verdict.bounce_type, match_method=match.method, match_strength=match.strength,
            from_addr=parsed.from_addr, from_name=parsed.from_name[:1000],
            to_addrs=json.dumps(parsed.to + parsed.cc), subject=parsed.subject, date=naive_utc(parsed.date),
            stripped_text=stripped, text_body=parsed.text, html_body=parsed.html,
            headers=json.dumps(parsed.headers), attachments=json.dumps(parsed.attachments),
            details=json.dumps(verdict.details | _delivery_details(parsed, source)),
            auth_results=json.dumps(parsed.auth_results), size=parsed.size, received_at=now)
        rid = inserted_id(conn.execute(_INSERT_REPLY, values))
        for key in keys:
            batch.seen[(tid, key)] = rid
            batch.processed.append({"tenant_id": tid, "key": key, "reply_id": rid})
        conn.execute(_COUNT_REPLY, {"thread": thread_id, "now": now})
        if verp is not None and (verp.forged or verdict.kind == cls.BOUNCE):
            # The return path speaks only for the messages it was minted for: a forged token suppresses
            # nobody and fires nothing; a real one fires message.bounced (below), not bounce.hard/soft.
            emitted = [] if verp.forged else self._verp_bounced(conn, tid, tname, rid, parsed, verdict, verp)
            return ReplyRecord(
                id=rid, tenant=tname, kind=verdict.kind, bounce_type=verdict.bounce_type, match_method=match.method,
                match_strength=match.strength, thread_id=thread_id, campaign_id=campaign_id,
                outbound_id=ob.id if ob else None, message_id=parsed.message_id, from_addr=parsed.from_addr,
                subject=parsed.subject, stripped_text=stripped, attachments=parsed.attachments,
                details=verdict.details, events=emitted, event_type=outcomes.BOUNCED if emitted else "")
        addresses: list[str] = []
        unsubscribed: list[str] = []
        suppress = list(verdict.suppress)
        if verdict.kind == cls.UNSUBSCRIBE:
            # The address the message went to (named by the token in unsubscribe+<token>@) and the sender;
            # reported once per address, whichever way (this or a one-click link) came first.
            named = ([ob.recipient] if ob is not None and match.method == "token" else []) + [
                address for address, _reason in verdict.suppress]
            addresses = [a for a in dict.fromkeys(a.strip().lower() for a in named) if "@" in a]
            unsubscribed = [a for a in addresses if optout.record_unsubscribe(conn, tid, a, f"reply:{rid}")]
        else:
            if verdict.kind == cls.COMPLAINT and ob is not None and not suppress:
                suppress.append((ob.recipient, "complaint"))  # the report did not name its recipient: its message did
            for address, reason in suppress:
                add_suppression(conn, tid, address, reason, f"reply:{rid}")
        etype = event_type_for(verdict.kind, verdict.bounce_type, ob is not None)
        flagged = verdict.kind == cls.HUMAN and parsed.auth.get("spam") is True
        if flagged:  # our content filter called it spam: not a human reply, whatever it looks like
            etype = SPAM_EVENT
        record = ReplyRecord(
            id=rid, tenant=tname, kind=verdict.kind, bounce_type=verdict.bounce_type, match_method=match.method,
            match_strength=match.strength, thread_id=thread_id, campaign_id=campaign_id,
            outbound_id=ob.id if ob else None, message_id=parsed.message_id, from_addr=parsed.from_addr,
            subject=parsed.subject, stripped_text=stripped, attachments=parsed.attachments,
            details=verdict.details, events=[], event_type="")
        if addresses and not unsubscribed:
            return record  # stored, but already reported: no second unsubscribe event
        if flagged and lookups.reply_spam_policy(conn, tid) == "drop":
            return record  # stored and shown in its thread, but the tenant wants no event for spam
        event_id = "evt_" + secrets.token_hex(12)
        campaign = None
        if campaign_id is not None:
            campaign = batch.campaigns.get(campaign_id)
            if campaign is None:
                crow = conn.execute(sa.select(campaigns.c.id, campaigns.c.name)
                                    .where(campaigns.c.id == campaign_id)).one()
                campaign = batch.campaigns[campaign_id] = {"id": crow.id, "name": crow.name}
        payload: dict[str, Any] = {
            "id": event_id, "type": etype, "timestamp": dt.datetime.now(dt.UTC).isoformat(), "tenant": tname,
            "data": {
                "campaign": campaign,
                "outbound_message": ({"id": ob.id, "message_id": ob.message_id, "recipient": ob.recipient,
                                      "contact": ob.contact, "step": ob.step} if ob else None),
                "thread": {"id": thread_id},
                "reply": {
                    "id": rid, "message_id": parsed.message_id, "from": parsed.from_addr, "from_name": parsed.from_name,
                    "to": parsed.to, "cc": parsed.cc, "subject": parsed.subject,
                    "date": parsed.date.isoformat() if parsed.date else None, "kind": verdict.kind,
                    "bounce_type": verdict.bounce_type,
                    "match": {"method": match.method, "strength": match.strength},
                    "stripped_text": stripped[:MAX_PAYLOAD_TEXT], "text": parsed.text[:MAX_PAYLOAD_TEXT],
                    "html": parsed.html[:MAX_PAYLOAD_TEXT], "headers": parsed.headers[:100],
                    "attachments": parsed.attachments[:100], "auth_results": parsed.auth_results,
                    "auth": parsed.auth,
                    "details": verdict.details,
                },
            },
        }
        if unsubscribed:
            payload["data"]["unsubscribe"] = {"address": unsubscribed[0], "method": "mailto"}
        batch.events.append({"id": event_id, "tenant_id": tid, "type": etype, "reply_id": rid,
                             "campaign_id": campaign_id, "payload": json.dumps(payload, default=str)})
        if tid not in batch.subscriptions:
            batch.subscriptions[tid] = Outbox.subscriptions(conn, tid)
        batch.deliveries += Outbox.delivery_rows(batch.subscriptions[tid], event_id, etype, self.clock())
        emitted = [event_id]
        if verdict.kind == cls.COMPLAINT and ob is not None:
            complained = outcomes.Outcome(
                outcomes.COMPLAINED, recipient=suppress[0][0] if suppress else ob.recipient, message_id=ob.message_id,
                contact=ob.contact, details={"complaint": {**verdict.details, "reply_id": rid}})
            emitted.append(outcomes.record(conn, tid, tname, complained, now=self.clock(), reply_id=rid) or "")
        record.events, record.event_type = [e for e in emitted if e], etype
        return record

    def _verp_bounced(self, conn: Connection, tid: int, tname: str, rid: int, parsed: Parsed,
                      verdict: cls.Classification, verp: _Verp) -> list[str]:
        """``message.bounced`` for each recipient of the VERP message that the bounce reports failed."""
        ours = {ob.recipient: ob for ob in verp.recipients}
        reported = [r for r in verdict.details.get("recipients", []) if r.get("address") in ours]
        if not reported and len(ours) == 1:  # a bounce that names no address we know: the token names it
            only = next(iter(ours))
            first = (verdict.details.get("recipients") or [{}])[0]
            reported = [{**first, "address": only, "type": first.get("type", verdict.bounce_type or "hard")}]
        emitted = []
        for item in reported:
            ob = ours[item["address"]]
            hard = item.get("type") == "hard"
            if hard:
                add_suppression(conn, tid, ob.recipient, "hard_bounce", f"reply:{rid}")
            outcome = outcomes.Outcome(
                outcomes.BOUNCED, recipient=ob.recipient, message_id=ob.message_id, contact=ob.contact,
                relay=verdict.details.get("reporting_mta") or None, status=item.get("status") or None,
                response=item.get("diagnostic") or None,
                details={"bounce": {"type": "hard" if hard else "soft", "status": item.get("status") or None,
                                    "remote_mta": item.get("remote_mta") or None,
                                    "reporting_mta": verdict.details.get("reporting_mta") or None,
                                    "diagnostic": item.get("diagnostic") or None, "action": item.get("action"),
                                    "source": "dsn" if verdict.details.get("standard", True) else "text",
                                    "reply_id": rid}})
            event_id = outcomes.record(conn, tid, tname, outcome, now=self.clock(), reply_id=rid)
            if event_id is not None:
                emitted.append(event_id)
        return emitted


def _delivery_details(parsed: Parsed, source: Source) -> dict[str, Any]:
    """What the stored reply remembers of how it arrived: truncated, flagged as spam, in a Junk folder."""
    out: dict[str, Any] = {}
    if parsed.truncated:
        out["truncated"] = True
    if parsed.auth.get("spam") is True:
        out["spam"] = True
    if source.folder != "INBOX":
        out["folder"] = source.folder
    return out


def _verp_outbound(verp: _Verp, verdict: cls.Classification) -> Outbound:
    """Of the VERP message's recipients, the one a bounce names (else the first)."""
    named = {r.get("address") for r in verdict.details.get("recipients", [])} if verdict.kind == cls.BOUNCE else set()
    return next((ob for ob in verp.recipients if ob.recipient in named), verp.recipients[0])


def _tenant(conn: Connection, tenant: str | int) -> tuple[int, str]:
    found = lookups.tenant_ref(conn, tenant)
    if found is None:
        raise RegistryError(f"unknown tenant {tenant!r}")
    return found.id, found.name


def _seen_keys(conn: Connection, keys: list[tuple[int, str]]) -> dict[tuple[int, str], int]:
    """Which of these (tenant id, key) pairs are stored, with their reply ids: one lookup per tenant."""
    by_tenant: dict[int, list[str]] = {}
    for tid, key in keys:
        by_tenant.setdefault(tid, []).append(key)
    out: dict[tuple[int, str], int] = {}
    for tid, wanted in by_tenant.items():
        wanted = list(dict.fromkeys(wanted))
        for start in range(0, len(wanted), SEEN_CHUNK):
            for row in conn.execute(_SEEN, {"tid": tid, "keys": wanted[start:start + SEEN_CHUNK]}):
                out[(tid, row.key)] = int(row.reply_id)
    return out


def _thread_for(conn: Connection, tid: int, ob: Outbound | None, parsed: Parsed) -> int:
    """The conversation of a campaign with one contact (or of one outbound message); created on first reply."""
    if ob is not None:
        q, owner = (_THREAD_OF_CAMPAIGN, ob.campaign_id) if ob.campaign_id is not None else (_THREAD_OF_OUTBOUND,
                                                                                             ob.id)
        row = conn.execute(q, {"tid": tid, "contact": ob.recipient, "owner": owner}).first()
        # Titled by the campaign message's subject; a message registered without one (the CLI's and the
        # API's subject is optional) takes the first reply's that has one.
        if row is not None:
            if not row.subject and thread_title(parsed.subject):
                conn.execute(threads.update().where(threads.c.id == row.id)
                             .values(subject=thread_title(parsed.subject)))
            return int(row.id)
        return inserted_id(conn.execute(_INSERT_THREAD, {
            "tenant_id": tid, "campaign_id": ob.campaign_id, "outbound_id": ob.id, "contact": ob.recipient,
            "subject": ob.subject or thread_title(parsed.subject)}))
    return inserted_id(conn.execute(_INSERT_THREAD, {"tenant_id": tid, "contact": parsed.from_addr,
                                                     "subject": parsed.subject[:2000]}))


def add_suppression(conn: Connection, tid: int, address: str, reason: str, source: str) -> bool:
    address = address.strip().lower()
    if "@" not in address or len(address) > 320:
        return False
    exists = conn.execute(sa.select(suppressions.c.id).where(suppressions.c.tenant_id == tid,
                                                             suppressions.c.address == address)).first()
    if exists:
        return False
    conn.execute(suppressions.insert().values(tenant_id=tid, address=address, reason=reason, source=source[:400]))
    return True


def _record(conn: Connection, reply_id: int, tname: str) -> ReplyRecord:
    row = conn.execute(replies.select().where(replies.c.id == reply_id)).one()
    return ReplyRecord(
        id=row.id, tenant=tname, kind=row.kind, bounce_type=row.bounce_type, match_method=row.match_method,
        match_strength=row.match_strength, thread_id=row.thread_id, campaign_id=row.campaign_id,
        outbound_id=row.outbound_id, message_id=row.message_id or "", from_addr=row.from_addr, subject=row.subject,
        stripped_text=row.stripped_text, attachments=json.loads(row.attachments), details=json.loads(row.details),
        events=[], event_type="", duplicate=True)
