"""Where the replies engine takes mail from, over the REST API: reply inboxes and IMAP sources.

The same functions as ``dovetail replies inbox|imap`` (:mod:`dovetail.replies.sources`); IMAP
passwords are sealed with the data directory's key as the CLI seals them and never shown again.
A tenant caller works in its own tenant; another tenant's inbox or source is 404.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Query, Response

from ...httpapi.deps import RowId, Scope, get_scope
from ...httpapi.problems import Problem
from ...replies.api import get_service
from ...replies.registry import RegistryError
from ...replies.service import RepliesService
from ...replies.sources.imap import ImapAccounts
from ...replies.sources.local import LocalHook
from ..context import WebContext, get_ctx
from . import outbound_models as om

router = APIRouter(tags=["replies sources"])


def _tenant(ctx: WebContext, scope: Scope, tenant: str | None) -> str:
    """The tenant a change is for: a tenant caller's own, or the one an admin names (404 when unknown)."""
    tenant = tenant or scope.tenant
    if not tenant:
        raise Problem(422, "Unprocessable Content", "name the tenant")
    found = ctx.directory.tenant_ref(tenant) if scope.allows(tenant) else None
    if found is None:
        raise Problem(404, "Not Found", "no such tenant")
    return found.name


def _listing_tenant(ctx: WebContext, scope: Scope, tenant: str | None) -> tuple[bool, str | None]:
    """Whether the caller may see anything of a listing, and the tenant it is filtered by (None: all)."""
    if not tenant:
        return True, scope.tenant_filter()
    found = ctx.directory.tenant_ref(tenant) if scope.allows(tenant) else None
    return (False, None) if found is None else (True, found.name)


# --- reply inboxes -----------------------------------------------------------------------------

@router.get("/reply-inboxes", response_model=om.ReplyInboxList)
def list_inboxes(tenant: str | None = Query(None, max_length=63), scope: Scope = Depends(get_scope),
                 ctx: WebContext = Depends(get_ctx), svc: RepliesService = Depends(get_service)) -> dict[str, Any]:
    """Mailboxes of ours whose deliveries go to the replies pipeline."""
    visible, which = _listing_tenant(ctx, scope, tenant)
    return {"items": LocalHook(svc).listing(which) if visible else []}


@router.post("/reply-inboxes", response_model=om.ReplyInbox, status_code=201)
def add_inbox(body: om.ReplyInboxIn, scope: Scope = Depends(get_scope),
              svc: RepliesService = Depends(get_service)) -> dict[str, Any]:
    """Make a mailbox a reply inbox: each message delivered to it is threaded and classified."""
    try:
        tenant, address = LocalHook(svc).add_inbox(scope.tenant_filter(), body.address)
    except RegistryError:
        raise Problem(404, "Not Found", f"no such mailbox {body.address}") from None
    return {"tenant": tenant, "address": address}


@router.delete("/reply-inboxes/{address}", status_code=204)
def remove_inbox(address: str = Path(max_length=320), scope: Scope = Depends(get_scope),
                 svc: RepliesService = Depends(get_service)) -> Response:
    hook = LocalHook(svc)
    wanted = address.strip().lower()
    for row in hook.listing(scope.tenant_filter()):
        if row["address"] == wanted or row["address"] == _normal(address):
            hook.unmark(row["tenant"], row["address"])
            return Response(status_code=204)
    raise Problem(404, "Not Found", f"{address} is not a reply inbox")


def _normal(address: str) -> str:
    from ...directory.addresses import AddressError, normalize_address

    try:
        return normalize_address(address)
    except AddressError:
        return ""


# --- IMAP sources ------------------------------------------------------------------------------

@router.get("/imap-sources", response_model=om.ImapSourceList)
def list_imap_sources(tenant: str | None = Query(None, max_length=63), scope: Scope = Depends(get_scope),
                      ctx: WebContext = Depends(get_ctx)) -> dict[str, Any]:
    """IMAP accounts the engine follows, with how far it got and its last error (no passwords)."""
    visible, which = _listing_tenant(ctx, scope, tenant)
    return {"items": ImapAccounts(ctx.engine).status(which) if visible else []}


def _visible_source(ctx: WebContext, scope: Scope, source_id: int) -> dict[str, Any]:
    rows = ImapAccounts(ctx.engine).status(scope.tenant_filter(), source_id)
    if not rows:
        raise Problem(404, "Not Found", "no such IMAP source")
    return rows[0]


@router.get("/imap-sources/{source_id}", response_model=om.ImapSourceOut)
def get_imap_source(source_id: RowId, scope: Scope = Depends(get_scope), ctx: WebContext = Depends(get_ctx)) -> dict:
    return _visible_source(ctx, scope, source_id)


@router.post("/imap-sources", response_model=om.ImapSourceOut, status_code=201)
def add_imap_source(body: om.ImapSourceIn, scope: Scope = Depends(get_scope), ctx: WebContext = Depends(get_ctx),
                    svc: RepliesService = Depends(get_service)) -> dict[str, Any]:
    """Follow an IMAP account: its new mail goes through the replies pipeline."""
    tenant = _tenant(ctx, scope, body.tenant)
    try:
        made = ImapAccounts(ctx.engine, svc.sealer).add(tenant, body.name, host=body.host, port=body.port,
                                                        tls=body.tls, username=body.username,
                                                        password=body.password, folder=body.folder)
    except RegistryError as exc:
        status = 409 if "already exists" in str(exc) else 422
        raise Problem(status, detail=str(exc)) from None
    return _visible_source(ctx, scope, made.id)


@router.delete("/imap-sources/{source_id}", status_code=204)
def remove_imap_source(source_id: RowId, scope: Scope = Depends(get_scope),
                       ctx: WebContext = Depends(get_ctx)) -> Response:
    row = _visible_source(ctx, scope, source_id)
    ImapAccounts(ctx.engine).remove(row["tenant"], source_id)
    return Response(status_code=204)
