"""Read side for the REST API and the CLI: threads, replies, events and suppressions per tenant."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from . import optout
from .pipeline import add_suppression
from .registry import tenant_id
from .schema import events, replies, suppressions, threads

MAX_LIMIT = 1000


def _iso(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


def _reply(row: Any, full: bool = False) -> dict[str, Any]:
    out = {"id": row.id, "thread_id": row.thread_id, "campaign_id": row.campaign_id,
           "outbound_id": row.outbound_id, "message_id": row.message_id, "kind": row.kind,
           "bounce_type": row.bounce_type, "match_method": row.match_method, "match_strength": row.match_strength,
           "from": row.from_addr, "from_name": row.from_name, "to": json.loads(row.to_addrs),
           "subject": row.subject, "date": _iso(row.date), "stripped_text": row.stripped_text,
           "attachments": json.loads(row.attachments), "details": json.loads(row.details),
           "source": row.source, "received_at": _iso(row.received_at)}
    if full:
        out |= {"text": row.text_body, "html": row.html_body, "headers": json.loads(row.headers),
                "auth_results": json.loads(row.auth_results), "size": row.size}
    return out


class Queries:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def threads(self, tenant: str | int, *, campaign_id: int | None = None, contact: str | None = None,
                limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            tid = tenant_id(conn, tenant)
            q = threads.select().where(threads.c.tenant_id == tid)
            if campaign_id is not None:
                q = q.where(threads.c.campaign_id == campaign_id)
            if contact:
                q = q.where(threads.c.contact == contact.strip().lower())
            rows = conn.execute(q.order_by(threads.c.id.desc()).limit(min(limit, MAX_LIMIT)).offset(offset))
            return [{k: _iso(v) for k, v in r._mapping.items() if k != "tenant_id"} for r in rows]

    def thread_exists(self, tenant: str | int, thread_id: int) -> bool:
        """Whether the thread exists and belongs to ``tenant`` (the tenant wall for ``/threads/{id}``)."""
        with self.engine.connect() as conn:
            tid = tenant_id(conn, tenant)
            return conn.execute(sa.select(threads.c.id).where(threads.c.id == thread_id,
                                                              threads.c.tenant_id == tid)).first() is not None

    def replies(self, tenant: str | int, *, campaign_id: int | None = None, thread_id: int | None = None,
                kind: str | None = None, q: str | None = None, limit: int = 100, offset: int = 0
                ) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            tid = tenant_id(conn, tenant)
            sel = replies.select().where(replies.c.tenant_id == tid)
            if campaign_id is not None:
                sel = sel.where(replies.c.campaign_id == campaign_id)
            if thread_id is not None:
                sel = sel.where(replies.c.thread_id == thread_id)
            if kind:
                sel = sel.where(replies.c.kind == kind)
            if q:
                like = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")[:200] + "%"
                sel = sel.where(sa.or_(replies.c.subject.ilike(like, escape="\\"),
                                       replies.c.from_addr.ilike(like, escape="\\"),
                                       replies.c.stripped_text.ilike(like, escape="\\")))
            rows = conn.execute(sel.order_by(replies.c.id.desc()).limit(min(limit, MAX_LIMIT)).offset(offset))
            return [_reply(r) for r in rows]

    def reply(self, tenant: str | int, reply_id: int) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            tid = tenant_id(conn, tenant)
            row = conn.execute(replies.select().where(replies.c.tenant_id == tid, replies.c.id == reply_id)).first()
            return _reply(row, full=True) if row else None

    def events(self, tenant: str | int, *, campaign_id: int | None = None, type: str | None = None,
               limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            tid = tenant_id(conn, tenant)
            q = events.select().where(events.c.tenant_id == tid)
            if campaign_id is not None:
                q = q.where(events.c.campaign_id == campaign_id)
            if type:
                q = q.where(events.c.type == type)
            rows = conn.execute(q.order_by(events.c.created_at.desc(), events.c.id)
                                .limit(min(limit, MAX_LIMIT)).offset(offset))
            return [{"id": r.id, "type": r.type, "reply_id": r.reply_id, "campaign_id": r.campaign_id,
                     "created_at": _iso(r.created_at), "payload": json.loads(r.payload)} for r in rows]

    # --- suppressions (read by outbound before sending) ---------------------------------------------

    def is_suppressed(self, tenant: str | int, address: str) -> bool:
        with self.engine.connect() as conn:
            return _suppressed(conn, tenant_id(conn, tenant), address)

    def suppressions(self, tenant: str | int, limit: int = 1000) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            tid = tenant_id(conn, tenant)
            rows = conn.execute(suppressions.select().where(suppressions.c.tenant_id == tid)
                                .order_by(suppressions.c.id).limit(min(limit, 100_000)))
            return [{"address": r.address, "reason": r.reason, "source": r.source,
                     "created_at": _iso(r.created_at)} for r in rows]

    def suppress(self, tenant: str | int, address: str, reason: str = "manual") -> bool:
        with self.engine.begin() as conn:
            return add_suppression(conn, tenant_id(conn, tenant), address, reason, "manual")

    def unsuppress(self, tenant: str | int, address: str) -> bool:
        with self.engine.begin() as conn:
            tid = tenant_id(conn, tenant)
            optout.forget(conn, tid, address)
            return conn.execute(suppressions.delete().where(
                suppressions.c.tenant_id == tid, suppressions.c.address == address.strip().lower())).rowcount > 0


def _suppressed(conn: Connection, tid: int, address: str) -> bool:
    return conn.execute(sa.select(suppressions.c.id).where(
        suppressions.c.tenant_id == tid, suppressions.c.address == address.strip().lower())).first() is not None
