"""UI pages over the replies engine: campaigns → threads → replies, webhooks, suppression list.

Reads are tenant-scoped queries on its tables; webhook redelivery goes through its ``Outbox`` so
the retry rules stay in one place.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Request, Response

from ..directory import lookups
from ..httpapi.deps import Posted, RowId, Scope
from ..httpapi.problems import Problem
from .authbadges import badges
from .context import WebContext, get_ctx
from .replies_view import replies_schema
from .ui import back, form_of, render, session_of

router = APIRouter(include_in_schema=False)


def _session(request: Request) -> tuple[dict[str, Any], Scope]:
    session = session_of(request)
    return session, session["scope"]


def _json_list(text: str | None) -> list[str]:
    """The stored A-R header values of a reply (a JSON list); empty for anything else."""
    try:
        values = json.loads(text or "[]")
    except ValueError:
        return []
    return [str(v) for v in values] if isinstance(values, list) else []


def _render(request: Request, name: str, **values: Any) -> Response:
    return render(request, name, **values)


@router.get("/campaigns")
def campaigns_page(request: Request, ctx: WebContext = Depends(get_ctx)) -> Response:
    s = replies_schema(ctx)
    _, scope = _session(request)
    c, r, t = s.campaigns, s.replies, s.threads
    nreplies = sa.select(sa.func.count()).select_from(r).where(r.c.campaign_id == c.c.id).scalar_subquery()
    nthreads = sa.select(sa.func.count()).select_from(t).where(t.c.campaign_id == c.c.id).scalar_subquery()
    query = (sa.select(c.c.id, c.c.name, c.c.created_at, lookups.tenant_name_of(c.c.tenant_id).label("tenant"),
                       nthreads.label("threads"), nreplies.label("replies"))
             .where(scope.where(c.c.tenant_id)).order_by(c.c.created_at.desc()).limit(500))
    with ctx.engine.connect() as conn:
        rows = [dict(x._mapping) for x in conn.execute(query)]
    return _render(request, "campaigns.html", campaigns=rows)


@router.get("/campaigns/{campaign_id}")
def campaign_page(request: Request, campaign_id: RowId, ctx: WebContext = Depends(get_ctx)) -> Response:
    s = replies_schema(ctx)
    _, scope = _session(request)
    c, t = s.campaigns, s.threads
    with ctx.engine.connect() as conn:
        camp = conn.execute(sa.select(c).where(c.c.id == campaign_id, scope.where(c.c.tenant_id))).first()
        if camp is None:
            raise Problem(404, "Not Found", "no such campaign")
        threads = [dict(x._mapping) for x in conn.execute(
            sa.select(t).where(t.c.campaign_id == campaign_id).order_by(t.c.last_reply_at.desc()).limit(500))]
        kinds = {row.thread_id: row.kind for row in conn.execute(
            sa.select(s.replies.c.thread_id, s.replies.c.kind)
            .where(s.replies.c.campaign_id == campaign_id).order_by(s.replies.c.id))}
    for th in threads:
        th["last_kind"] = kinds.get(th["id"], "")
    return _render(request, "campaign.html", campaign=dict(camp._mapping), threads=threads)


@router.get("/threads/{thread_id}")
def thread_page(request: Request, thread_id: RowId, ctx: WebContext = Depends(get_ctx)) -> Response:
    s = replies_schema(ctx)
    _, scope = _session(request)
    t, r = s.threads, s.replies
    with ctx.engine.connect() as conn:
        thread = conn.execute(sa.select(t).where(t.c.id == thread_id, scope.where(t.c.tenant_id))).first()
        if thread is None:
            raise Problem(404, "Not Found", "no such thread")
        rows = [dict(x._mapping) | {"details": json.loads(x.details or "{}")} for x in conn.execute(
            sa.select(r.c.id, r.c.kind, r.c.from_addr, r.c.from_name, r.c.subject, r.c.stripped_text,
                      r.c.received_at, r.c.bounce_type, r.c.match_method, r.c.auth_results, r.c.details)
            .where(r.c.thread_id == thread_id).order_by(r.c.id))]
        for row in rows:
            row["auth"] = badges(_json_list(row.pop("auth_results")), ctx.cfg.hostname)
        campaign = None
        if thread.campaign_id is not None:
            campaign = conn.execute(sa.select(s.campaigns.c.name)
                                    .where(s.campaigns.c.id == thread.campaign_id)).scalar()
    return _render(request, "thread.html", thread=dict(thread._mapping), replies=rows, campaign_name=campaign)


@router.get("/replies/{reply_id}/body")
def reply_body(request: Request, reply_id: RowId, ctx: WebContext = Depends(get_ctx)) -> Response:
    """A reply's HTML (or text) for the sandboxed viewer, under the same CSP as queued messages."""
    from .mailview import BODY_CSP

    s = replies_schema(ctx)
    _, scope = _session(request)
    r = s.replies
    with ctx.engine.connect() as conn:
        row = conn.execute(sa.select(r.c.html_body, r.c.text_body)
                           .where(r.c.id == reply_id, scope.where(r.c.tenant_id))).first()
    if row is None:
        raise Problem(404, "Not Found", "no such reply")
    if row.html_body:
        body = row.html_body
    else:
        from html import escape

        body = ("<!doctype html><meta charset='utf-8'><pre style='white-space:pre-wrap;font:14px monospace'>"
                + escape(row.text_body) + "</pre>")
    return Response(body, media_type="text/html; charset=utf-8",
                    headers={"Content-Security-Policy": BODY_CSP, "X-Frame-Options": "SAMEORIGIN"})


def _tenants_in_scope(ctx: WebContext, scope: Scope) -> list[str]:
    return [t["name"] for t in ctx.directory.tenant_list() if scope.allows(t["name"])]


@router.get("/webhooks")
def webhooks_page(request: Request, ctx: WebContext = Depends(get_ctx)) -> Response:
    replies_schema(ctx)
    _, scope = _session(request)
    from ..replies.outbox import Outbox

    box = Outbox(ctx.engine)
    endpoints, deliveries = [], []
    for tenant in _tenants_in_scope(ctx, scope):
        endpoints += [{**e, "tenant": tenant} for e in box.endpoints(tenant)]
        deliveries += [{**d, "tenant": tenant} for d in box.deliveries(tenant, limit=200)]
    for e in endpoints:
        e.pop("secret", None)
    deliveries.sort(key=lambda d: d["id"], reverse=True)
    return _render(request, "webhooks.html", endpoints=endpoints, deliveries=deliveries[:200])


@router.post("/webhooks/deliveries/{delivery_id}/redeliver")
def redeliver(request: Request, posted: Posted, delivery_id: RowId, ctx: WebContext = Depends(get_ctx)) -> Response:
    from ..replies.outbox import Outbox
    replies_schema(ctx)
    session, scope = _session(request)
    form = form_of(request, session, posted)
    tenant = form.get("tenant", "")
    if not scope.allows(tenant) or not Outbox(ctx.engine).redeliver(tenant, delivery_id):
        raise Problem(404, "Not Found", "no such delivery")
    return back("/webhooks", f"Delivery {delivery_id} queued again.")


@router.get("/suppressions")
def suppressions_page(request: Request, ctx: WebContext = Depends(get_ctx)) -> Response:
    s = replies_schema(ctx)
    _, scope = _session(request)
    sup = s.suppressions
    with ctx.engine.connect() as conn:
        rows = [dict(x._mapping) for x in conn.execute(
            sa.select(sup.c.address, sup.c.reason, sup.c.source, sup.c.created_at,
                      lookups.tenant_name_of(sup.c.tenant_id).label("tenant"))
            .where(scope.where(sup.c.tenant_id)).order_by(sup.c.created_at.desc()).limit(1000))]
    return _render(request, "suppressions.html", suppressions=rows)


def pretty_json(text: str) -> str:
    try:
        return json.dumps(json.loads(text), indent=2)
    except (ValueError, TypeError):
        return text
