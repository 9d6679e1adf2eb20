"""HTTP send API: ``POST /api/v1/messages`` and ``POST /api/v1/messages/batch``.

``make_router(service, get_scope)`` returns a FastAPI ``APIRouter``; ``get_scope`` is the web
app's dependency naming the caller's tenant (an object with a ``tenant`` attribute, or the
tenant name). A scope without a tenant (an administrator) must name one in the body. Errors are
RFC 9457 problem details.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Header
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from dovetail.directory.addresses import normalize_tenant
from dovetail.outbound.compose import Attachment, Draft
from dovetail.outbound.send import SendError, SendRequest, SendService


class AttachmentIn(BaseModel):
    filename: str = Field(max_length=255)
    content_type: str = Field("application/octet-stream", max_length=127)
    content: str = Field(description="base64", max_length=28 * 1024 * 1024)


class MessageIn(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    from_: str = Field(alias="from", max_length=998)
    to: list[str] = Field(default_factory=list, max_length=1000)
    cc: list[str] = Field(default_factory=list, max_length=1000)
    bcc: list[str] = Field(default_factory=list, max_length=1000)
    subject: str = Field("", max_length=998)
    text: str | None = Field(None, max_length=10 * 1024 * 1024)
    html: str | None = Field(None, max_length=10 * 1024 * 1024)
    headers: dict[str, str] = Field(default_factory=dict)
    attachments: list[AttachmentIn] = Field(default_factory=list, max_length=20)
    campaign: str | None = Field(None, max_length=200)
    contact: str | None = Field(None, max_length=200)
    tags: list[str] = Field(default_factory=list, max_length=20)
    track_replies: bool = False
    unsubscribe: bool = True
    tenant: str | None = Field(None, max_length=64)

    def to_request(self, to: list[str] | None = None) -> SendRequest:
        draft = Draft(from_=self.from_, to=list(self.to if to is None else to), cc=list(self.cc), bcc=list(self.bcc),
                      subject=self.subject, text=self.text, html=self.html, headers=dict(self.headers),
                      attachments=[Attachment(a.filename, a.content_type, a.content) for a in self.attachments])
        return SendRequest(draft, self.campaign, self.contact, list(self.tags), self.track_replies, self.unsubscribe)


class BatchRecipient(BaseModel):
    to: str = Field(max_length=998)
    variables: dict[str, str] = Field(default_factory=dict)


class BatchIn(MessageIn):
    to: list[str] = Field(default_factory=list, max_length=0)
    recipients: list[BatchRecipient] = Field(min_length=1, max_length=1000)


def problem(status: int, detail: str) -> JSONResponse:
    titles = {403: "Forbidden", 404: "Not Found", 409: "Conflict", 422: "Unprocessable Content",
              429: "Too Many Requests"}
    return JSONResponse({"type": "about:blank", "title": titles.get(status, "Error"), "status": status,
                         "detail": detail}, status_code=status, media_type="application/problem+json")


def _tenant(scope: Any, body: MessageIn) -> str:
    tenant = scope if isinstance(scope, str) else getattr(scope, "tenant", None)
    if tenant:
        if body.tenant and normalize_tenant(body.tenant) != normalize_tenant(tenant):
            raise SendError(403, f"this API key belongs to tenant {tenant}")
        return tenant
    if not body.tenant:
        raise SendError(422, "tenant: an administrator must name the tenant to send as")
    return body.tenant


def make_router(service: SendService | Callable[[], SendService], get_scope: Callable[..., Any]) -> APIRouter:
    """The router; endpoint parameters use default-value dependencies because ``get_scope`` is local."""
    router = APIRouter(prefix="/api/v1", tags=["send"])

    def svc() -> SendService:
        return service if isinstance(service, SendService) else service()

    @router.post("/messages", status_code=202)
    async def send_message(body: MessageIn, scope: Any = Depends(get_scope),
                           idempotency_key: str | None = Header(None, max_length=200)) -> Any:
        try:
            tenant = _tenant(scope, body)
            fingerprint = body.model_dump(by_alias=True)
            result = await asyncio.to_thread(svc().send, tenant, body.to_request(), idempotency_key, fingerprint)
        except SendError as exc:
            return problem(exc.status, exc.message)
        status = 200 if result.replayed else 202
        return JSONResponse(result.to_json(), status_code=status)

    @router.post("/messages/batch", status_code=202)
    async def send_batch(body: BatchIn, scope: Any = Depends(get_scope),
                         idempotency_key: str | None = Header(None, max_length=190)) -> Any:
        try:
            tenant = _tenant(scope, body)
            results = await asyncio.to_thread(svc().send_batch, tenant, body.to_request(to=[]),
                                              [(r.to, r.variables) for r in body.recipients], idempotency_key)
        except SendError as exc:
            return problem(exc.status, exc.message)
        items = [{"to": r.to, "error": {"status": res.status, "detail": res.message}} if isinstance(res, SendError)
                 else {"to": r.to, **res.to_json()} for r, res in zip(body.recipients, results, strict=True)]
        return JSONResponse({"results": items}, status_code=202)

    return router
