"""REST routes of the replies engine, mounted by the web app under ``/api/v1``.

Campaigns and their messages, lookups by Message-ID and reply token, threads, replies, events,
webhook endpoints and deliveries, and the suppression list. Every route takes the caller's
:class:`~dovetail.httpapi.deps.Scope`: a tenant caller works in its own tenant (asking for another
gives 404); an admin names the tenant with ``?tenant=``.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from dovetail.directory import lookups
from dovetail.httpapi.deps import ROW_ID_MAX, RowId, Scope, get_scope
from dovetail.httpapi.problems import Problem

from .outbox import EVENT_TYPES
from .registry import RegistryError
from .service import RepliesService

router = APIRouter(tags=["replies"])


def get_service(request: Request) -> RepliesService:
    """One :class:`RepliesService` per app, opened on the app's engine and data directory."""
    extra = request.app.state.ctx.extra
    if "replies" not in extra:
        extra["replies"] = RepliesService.open(request.app.state.engine, request.app.state.ctx.cfg.data_dir)
    return extra["replies"]


OptionalId = Annotated[int | None, Query(ge=1, le=ROW_ID_MAX)]  # an id filter, bounded like path ids


def tenant_of(request: Request, scope: Scope = Depends(get_scope),
              tenant: str | None = Query(None, max_length=64, description="tenant (admin callers only)")) -> str:
    """The tenant a request works in (an admin names it; it must exist)."""
    if not scope.is_admin:
        if tenant is not None and not scope.allows(tenant):
            raise Problem(404, "Not Found", "no such tenant")
        return scope.tenant or ""
    if not tenant:
        raise Problem(422, "Unprocessable Content", "admin callers name the tenant with ?tenant=")
    with request.app.state.engine.connect() as conn:
        found = lookups.tenant_ref(conn, tenant)
    if found is None:
        raise Problem(404, "Not Found", "no such tenant")
    return found.name


def _refused(exc: RegistryError) -> Problem:
    text = str(exc)
    if text.startswith(("unknown tenant", "unknown campaign")):
        return Problem(404, "Not Found", text)
    if "already exists" in text:
        return Problem(409, "Conflict", text)
    return Problem(422, "Unprocessable Content", text)


class CampaignIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=5000)
    window_days: int = Field(60, ge=1, le=3650)


class MessageIn(BaseModel):
    message_id: str = Field(min_length=3, max_length=998)
    recipient: str = Field(min_length=3, max_length=320)
    step: int = Field(0, ge=0, le=10_000)
    subject: str = Field("", max_length=2000)
    sent_at: dt.datetime | None = None
    relay_message_id: str | None = Field(None, max_length=998)
    relay_queue_id: str | None = Field(None, max_length=200)
    contact: str | None = Field(None, max_length=200)
    reply_token: str | None = Field(None, max_length=64)


class EndpointIn(BaseModel):
    url: str = Field(min_length=8, max_length=2000)
    event_types: list[str] = Field(default_factory=lambda: ["*"], max_length=len(EVENT_TYPES))
    description: str = Field("", max_length=2000)


class SuppressionIn(BaseModel):
    address: str = Field(min_length=3, max_length=320)
    reason: str = Field("manual", max_length=32)


# --- campaigns and messages --------------------------------------------------------------------------

@router.post("/campaigns", status_code=201)
def create_campaign(body: CampaignIn, tenant: str = Depends(tenant_of),
                    svc: RepliesService = Depends(get_service)) -> dict[str, Any]:
    try:
        return svc.registry.create_campaign(tenant, body.name, body.description, body.window_days).as_dict()
    except RegistryError as exc:
        raise _refused(exc) from None


@router.get("/campaigns")
def list_campaigns(tenant: str = Depends(tenant_of), svc: RepliesService = Depends(get_service)) -> dict[str, Any]:
    try:
        return {"items": [c.as_dict() for c in svc.registry.campaigns(tenant)]}
    except RegistryError as exc:
        raise _refused(exc) from None


@router.get("/campaigns/{campaign_id}")
def get_campaign(campaign_id: RowId, tenant: str = Depends(tenant_of),
                 svc: RepliesService = Depends(get_service)) -> dict[str, Any]:
    try:
        return svc.registry.campaign(tenant, campaign_id).as_dict()
    except RegistryError as exc:
        raise _refused(exc) from None


@router.post("/campaigns/{campaign_id}/messages", status_code=201)
def register_message(campaign_id: RowId, body: MessageIn, tenant: str = Depends(tenant_of),
                     svc: RepliesService = Depends(get_service)) -> dict[str, Any]:
    """Register a message sent elsewhere, so replies to it thread to this campaign."""
    try:
        ob = svc.registry.register_outbound(
            tenant, campaign_id, message_id=body.message_id, recipient=body.recipient, step=body.step,
            subject=body.subject, sent_at=body.sent_at, relay_message_id=body.relay_message_id,
            relay_queue_id=body.relay_queue_id, contact=body.contact, reply_token=body.reply_token,
            create_campaign=False)
    except RegistryError as exc:
        raise _refused(exc) from None
    return ob.as_dict()


@router.get("/campaigns/{campaign_id}/messages")
def list_messages(campaign_id: RowId, limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0),
                  tenant: str = Depends(tenant_of), svc: RepliesService = Depends(get_service)) -> dict[str, Any]:
    try:
        items = svc.registry.outbound(tenant, campaign=campaign_id, limit=limit, offset=offset)
    except RegistryError as exc:
        raise _refused(exc) from None
    return {"items": [o.as_dict() for o in items]}


@router.post("/reply-tokens", status_code=201)
def mint_token(tenant: str = Depends(tenant_of), svc: RepliesService = Depends(get_service)) -> dict[str, str]:
    """A reply token to put in a message's Reply-To before sending it (register it with the message)."""
    return {"token": svc.registry.new_reply_token(tenant)}


@router.get("/messages/lookup")
def lookup_message(message_id: str | None = Query(None, max_length=998), token: str | None = Query(None, max_length=64),
                   tenant: str = Depends(tenant_of), svc: RepliesService = Depends(get_service)) -> dict[str, Any]:
    """The outbound message with this Message-ID (ours or the relay's) or reply token."""
    if bool(message_id) == bool(token):
        raise Problem(422, "Unprocessable Content", "give exactly one of message_id and token")
    found = (svc.registry.by_message_id(tenant, message_id) if message_id
             else svc.registry.by_token(tenant, token or ""))
    if found is None:
        raise Problem(404, "Not Found", "no such message")
    return found.as_dict()


# --- threads, replies, events ----------------------------------------------------------------------

@router.get("/threads")
def list_threads(campaign_id: OptionalId = None, contact: str | None = Query(None, max_length=320),
                 limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0),
                 tenant: str = Depends(tenant_of), svc: RepliesService = Depends(get_service)) -> dict[str, Any]:
    return {"items": svc.queries.threads(tenant, campaign_id=campaign_id, contact=contact, limit=limit,
                                         offset=offset)}


@router.get("/threads/{thread_id}/replies")
def thread_replies(thread_id: RowId, tenant: str = Depends(tenant_of),
                   svc: RepliesService = Depends(get_service)) -> dict[str, Any]:
    if not svc.queries.thread_exists(tenant, thread_id):
        raise Problem(404, "Not Found", "no such thread")
    return {"items": svc.queries.replies(tenant, thread_id=thread_id, limit=1000)}


@router.get("/replies")
def list_replies(campaign_id: OptionalId = None, kind: str | None = Query(None, max_length=32),
                 q: str | None = Query(None, max_length=200, description="search subject, sender and text"),
                 limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0),
                 tenant: str = Depends(tenant_of), svc: RepliesService = Depends(get_service)) -> dict[str, Any]:
    return {"items": svc.queries.replies(tenant, campaign_id=campaign_id, kind=kind, q=q, limit=limit,
                                         offset=offset)}


@router.get("/replies/{reply_id}")
def get_reply(reply_id: RowId, tenant: str = Depends(tenant_of),
              svc: RepliesService = Depends(get_service)) -> dict[str, Any]:
    found = svc.queries.reply(tenant, reply_id)
    if found is None:
        raise Problem(404, "Not Found", "no such reply")
    return found


@router.get("/events")
def list_events(campaign_id: OptionalId = None, type: str | None = Query(None, max_length=64),
                limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0),
                tenant: str = Depends(tenant_of), svc: RepliesService = Depends(get_service)) -> dict[str, Any]:
    return {"items": svc.queries.events(tenant, campaign_id=campaign_id, type=type, limit=limit, offset=offset)}


# --- webhooks ---------------------------------------------------------------------------------------

@router.get("/webhooks/endpoints")
def list_endpoints(tenant: str = Depends(tenant_of), svc: RepliesService = Depends(get_service)) -> dict[str, Any]:
    return {"items": svc.outbox.endpoints(tenant)}


@router.post("/webhooks/endpoints", status_code=201)
def add_endpoint(body: EndpointIn, tenant: str = Depends(tenant_of),
                 svc: RepliesService = Depends(get_service)) -> dict[str, Any]:
    """A new endpoint; the answer holds its signing secret, shown only this once."""
    try:
        return svc.outbox.add_endpoint(tenant, body.url, body.event_types, body.description)
    except RegistryError as exc:
        raise _refused(exc) from None


@router.delete("/webhooks/endpoints/{endpoint_id}", status_code=204)
def remove_endpoint(endpoint_id: RowId, tenant: str = Depends(tenant_of),
                    svc: RepliesService = Depends(get_service)) -> None:
    if not svc.outbox.remove_endpoint(tenant, endpoint_id):
        raise Problem(404, "Not Found", "no such endpoint")


@router.get("/webhooks/deliveries")
def list_deliveries(status: str | None = Query(None, pattern="^(pending|delivered|gone|dead)$"),
                    endpoint_id: OptionalId = None, limit: int = Query(100, ge=1, le=1000),
                    tenant: str = Depends(tenant_of), svc: RepliesService = Depends(get_service)) -> dict[str, Any]:
    return {"items": svc.outbox.deliveries(tenant, status=status, endpoint_id=endpoint_id, limit=limit)}


@router.post("/webhooks/deliveries/{delivery_id}/redeliver", status_code=202)
def redeliver(delivery_id: RowId, tenant: str = Depends(tenant_of),
              svc: RepliesService = Depends(get_service)) -> dict[str, Any]:
    if not svc.outbox.redeliver(tenant, delivery_id):
        raise Problem(404, "Not Found", "no such delivery")
    return {"id": delivery_id, "status": "pending"}


# --- suppressions ------------------------------------------------------------------------------------

@router.get("/suppressions")
def list_suppressions(tenant: str = Depends(tenant_of),
                      svc: RepliesService = Depends(get_service)) -> dict[str, Any]:
    return {"items": svc.queries.suppressions(tenant)}


@router.post("/suppressions", status_code=201)
def add_suppression(body: SuppressionIn, tenant: str = Depends(tenant_of),
                    svc: RepliesService = Depends(get_service)) -> dict[str, Any]:
    if "@" not in body.address:
        raise Problem(422, "Unprocessable Content", "not an address")
    svc.queries.suppress(tenant, body.address, body.reason)
    return {"address": body.address.strip().lower(), "reason": body.reason}


@router.delete("/suppressions/{address}", status_code=204)
def remove_suppression(address: str, tenant: str = Depends(tenant_of),
                       svc: RepliesService = Depends(get_service)) -> None:
    if not svc.queries.unsuppress(tenant, address):
        raise Problem(404, "Not Found", "no such suppression")
