"""Tenants, domains, mailboxes, aliases and catch-all over the REST API.

All writes go through :class:`dovetail.directory.Directory`; this module adds the tenant wall
(a tenant caller sees and changes only its own tenant's objects, and gets 404 for the rest),
pagination and filtering.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Query, Response

from ...config import parse_size
from ...directory import DirectoryError, DomainInfo, display_domain
from ...directory.addresses import AddressError, split_address
from ...httpapi.deps import Scope, get_scope
from ...httpapi.problems import Problem
from ...mailauth.passwords import hash_password
from ..context import WebContext, directory_problem, get_ctx
from ..integrations import dns_records
from ..pagination import PageParams, page_params, paginate
from ..usage import MailboxUsage
from . import models as m

router = APIRouter()

Q = Query(None, max_length=320, description="substring filter")


def _not_found(what: str) -> Problem:
    return Problem(404, "Not Found", f"no such {what}")


def _matches(text: str, q: str | None) -> bool:
    return not q or q.lower() in text.lower()


# --- tenants -----------------------------------------------------------------------------------

def _visible_tenant(ctx: WebContext, scope: Scope, name: str) -> dict[str, Any]:
    if not scope.allows(name):
        raise _not_found("tenant")
    row = ctx.directory.tenant_get(name)
    if row is None:
        raise _not_found("tenant")
    return row


@router.get("/tenants", response_model=m.TenantPage, tags=["tenants"])
def list_tenants(q: str | None = Q, enabled: bool | None = None, page: PageParams = Depends(page_params),
                 scope: Scope = Depends(get_scope), ctx: WebContext = Depends(get_ctx)) -> dict[str, Any]:
    rows = [r for r in ctx.directory.tenant_list() if scope.allows(r["name"]) and _matches(r["name"], q)
            and (enabled is None or bool(r["enabled"]) == enabled)]
    return paginate(rows, lambda r: r["name"], page)


@router.post("/tenants", response_model=m.Tenant, status_code=201, tags=["tenants"])
def create_tenant(body: m.TenantIn, scope: Scope = Depends(get_scope),
                  ctx: WebContext = Depends(get_ctx)) -> dict[str, Any]:
    scope.require_admin()
    try:
        made = ctx.directory.tenant_add(body.name, body.display_name, body.enabled)
    except DirectoryError as exc:
        raise directory_problem(exc) from None
    return _visible_tenant(ctx, scope, made["name"])


@router.get("/tenants/{tenant}", response_model=m.Tenant, tags=["tenants"])
def get_tenant(tenant: str, scope: Scope = Depends(get_scope), ctx: WebContext = Depends(get_ctx)) -> dict:
    return _visible_tenant(ctx, scope, tenant)


@router.patch("/tenants/{tenant}", response_model=m.Tenant, tags=["tenants"])
def update_tenant(tenant: str, body: m.TenantPatch, scope: Scope = Depends(get_scope),
                  ctx: WebContext = Depends(get_ctx)) -> dict[str, Any]:
    row = _visible_tenant(ctx, scope, tenant)
    scope.require_admin()
    extra: dict[str, Any] = {"dmarc_enforce": body.dmarc_enforce} if "dmarc_enforce" in body.model_fields_set else {}
    ctx.directory.tenant_set(row["name"], enabled=body.enabled, display_name=body.display_name, **extra)
    return _visible_tenant(ctx, scope, row["name"])


@router.delete("/tenants/{tenant}", status_code=204, tags=["tenants"])
def delete_tenant(tenant: str, force: bool = False, scope: Scope = Depends(get_scope),
                  ctx: WebContext = Depends(get_ctx)) -> Response:
    row = _visible_tenant(ctx, scope, tenant)
    scope.require_admin()
    try:
        ctx.directory.tenant_rm(row["name"], force=force)
    except DirectoryError as exc:
        raise directory_problem(exc) from None
    return Response(status_code=204)


# --- domains -----------------------------------------------------------------------------------

def visible_domain(ctx: WebContext, scope: Scope, name: str) -> DomainInfo:
    """The domain when it exists and the caller may see it; 404 otherwise (either way)."""
    try:
        info = ctx.directory.domain_get(name)
    except DirectoryError:
        raise _not_found("domain") from None
    if not scope.allows(info.tenant):
        raise _not_found("domain")
    return info


def dns_status(ctx: WebContext, domain: str) -> dict[str, Any]:
    try:
        records = dns_records(ctx.cfg, ctx.engine, domain)
    except Exception as exc:  # noqa: BLE001 - a failing check is shown, not a 500
        return {"configured": False, "records": [], "detail": f"DNS check failed: {exc}"}
    return {"configured": True, "records": records, "detail": ""}


def _domain_out(ctx: WebContext, info: DomainInfo, detail: bool = False) -> dict[str, Any]:
    out = {"name": info.name, "display_name": display_domain(info.name), "tenant": info.tenant,
           "enabled": bool(info.enabled), "catchall": info.catchall, "plus_separator": info.plus_separator,
           "postmaster": info.postmaster, "dmarc_enforce": info.dmarc_enforce,
           "dmarc_enforce_by": info.dmarc_enforce_setting[1], "mta_sts_mode": info.mta_sts_mode}
    if detail:
        out["mailboxes"] = len(ctx.directory.mailbox_list(domain=info.name))
        out["aliases"] = len(ctx.directory.alias_list(domain=info.name))
        out["dns"] = dns_status(ctx, info.name)
    return out


@router.get("/domains", response_model=m.DomainPage, tags=["domains"])
def list_domains(tenant: str | None = Query(None, max_length=63), q: str | None = Q, enabled: bool | None = None,
                 page: PageParams = Depends(page_params), scope: Scope = Depends(get_scope),
                 ctx: WebContext = Depends(get_ctx)) -> dict[str, Any]:
    if tenant and not scope.allows(tenant):
        return {"items": [], "next_cursor": None}
    rows = [d for d in ctx.directory.domain_list(tenant or scope.tenant_filter())
            if scope.allows(d.tenant) and (_matches(d.name, q) or _matches(display_domain(d.name), q))
            and (enabled is None or bool(d.enabled) == enabled)]
    result = paginate(rows, lambda d: d.name, page)
    result["items"] = [_domain_out(ctx, d) for d in result["items"]]
    return result


@router.post("/domains", response_model=m.Domain, status_code=201, tags=["domains"])
def create_domain(body: m.DomainIn, scope: Scope = Depends(get_scope),
                  ctx: WebContext = Depends(get_ctx)) -> dict[str, Any]:
    tenant = body.tenant or scope.tenant
    if not tenant:
        raise Problem(422, "Unprocessable Content", "name the tenant that owns the domain")
    if not scope.allows(tenant):
        raise _not_found("tenant")
    try:
        info = ctx.directory.domain_add(body.name, tenant, postmaster=body.postmaster,
                                        plus_separator=body.plus_separator, enabled=body.enabled)
    except DirectoryError as exc:
        raise directory_problem(exc) from None
    return _domain_out(ctx, info, detail=True)


@router.get("/domains/{domain}", response_model=m.Domain, tags=["domains"])
def get_domain(domain: str, scope: Scope = Depends(get_scope), ctx: WebContext = Depends(get_ctx)) -> dict:
    return _domain_out(ctx, visible_domain(ctx, scope, domain), detail=True)


@router.get("/domains/{domain}/dns", response_model=m.DnsStatus, tags=["domains"])
def get_domain_dns(domain: str, scope: Scope = Depends(get_scope), ctx: WebContext = Depends(get_ctx)) -> dict:
    return dns_status(ctx, visible_domain(ctx, scope, domain).name)


@router.patch("/domains/{domain}", response_model=m.Domain, tags=["domains"])
def update_domain(domain: str, body: m.DomainPatch, scope: Scope = Depends(get_scope),
                  ctx: WebContext = Depends(get_ctx)) -> dict[str, Any]:
    info = visible_domain(ctx, scope, domain)
    values = {k: getattr(body, k) for k in body.model_fields_set}
    for key in ("enabled", "plus_separator", "mta_sts_mode"):
        if key in values and values[key] is None:
            del values[key]
    if "plus_separator" in values:
        sep = values["plus_separator"]
        if sep.isalnum() or sep in "@/.\\\" ":
            raise Problem(422, "Unprocessable Content", f"plus separator {sep!r}: use a character such as + or -")
    if not values:
        return _domain_out(ctx, info, detail=True)
    try:
        info = ctx.directory.domain_set(info.name, **values)
    except DirectoryError as exc:
        raise directory_problem(exc) from None
    return _domain_out(ctx, info, detail=True)


@router.delete("/domains/{domain}", status_code=204, tags=["domains"])
def delete_domain(domain: str, force: bool = False, scope: Scope = Depends(get_scope),
                  ctx: WebContext = Depends(get_ctx)) -> Response:
    info = visible_domain(ctx, scope, domain)
    try:
        ctx.directory.domain_rm(info.name, force=force)
    except DirectoryError as exc:
        raise directory_problem(exc) from None
    return Response(status_code=204)


@router.put("/domains/{domain}/catchall", response_model=m.Domain, tags=["domains"])
def set_catchall(domain: str, body: m.CatchAllIn, scope: Scope = Depends(get_scope),
                 ctx: WebContext = Depends(get_ctx)) -> dict[str, Any]:
    info = visible_domain(ctx, scope, domain)
    try:
        info = ctx.directory.domain_set(info.name, catchall=body.target)
    except DirectoryError as exc:
        raise directory_problem(exc) from None
    return _domain_out(ctx, info, detail=True)


@router.delete("/domains/{domain}/catchall", status_code=204, tags=["domains"])
def delete_catchall(domain: str, scope: Scope = Depends(get_scope), ctx: WebContext = Depends(get_ctx)) -> Response:
    info = visible_domain(ctx, scope, domain)
    ctx.directory.domain_set(info.name, catchall=None)
    return Response(status_code=204)


# --- mailboxes ---------------------------------------------------------------------------------

def _quota(value: int | str | None) -> int | None:
    if value is None:
        return None
    try:
        return parse_size(value)
    except ValueError as exc:
        raise Problem(422, "Unprocessable Content", f"quota {value!r}: {exc}") from None


def _mailbox_out(ctx: WebContext, row: dict[str, Any], usage: MailboxUsage | None = None) -> dict[str, Any]:
    used, messages = (usage or MailboxUsage(ctx)).of(row["tenant"], row["address"])
    return {"address": row["address"], "tenant": row["tenant"], "quota_bytes": int(row["quota_bytes"] or 0),
            "enabled": bool(row["enabled"]), "usage_bytes": used, "messages": messages}


def _visible_row(scope: Scope, address: str, what: str, key: str,
                 listing: Callable[..., list[dict[str, Any]]]) -> dict[str, Any]:
    """The ``listing`` row whose ``key`` is ``address``, when the caller's tenant wall lets it see it."""
    try:
        local, dom = split_address(address)
    except AddressError:
        raise _not_found(what) from None
    for row in listing(domain=dom, tenant=scope.tenant_filter()):
        if row[key] == f"{local}@{dom}" and scope.allows(row["tenant"]):
            return row
    raise _not_found(what)


def visible_mailbox(ctx: WebContext, scope: Scope, address: str) -> dict[str, Any]:
    return _visible_row(scope, address, "mailbox", "address", ctx.directory.mailbox_list)


def _listing_filter(ctx: WebContext, scope: Scope, domain: str | None,
                    tenant: str | None) -> tuple[str | None, str | None] | None:
    """The (domain, tenant) a listing may ask the directory for, or None when the caller may see none."""
    if tenant and not scope.allows(tenant):
        return None
    if domain:
        try:
            domain = visible_domain(ctx, scope, domain).name
        except Problem:
            return None
    return domain, tenant or scope.tenant_filter()


@router.get("/mailboxes", response_model=m.MailboxPage, tags=["mailboxes"])
def list_mailboxes(domain: str | None = Query(None, max_length=253), tenant: str | None = Query(None, max_length=63),
                   q: str | None = Q, enabled: bool | None = None, page: PageParams = Depends(page_params),
                   scope: Scope = Depends(get_scope), ctx: WebContext = Depends(get_ctx)) -> dict[str, Any]:
    where = _listing_filter(ctx, scope, domain, tenant)
    if where is None:
        return {"items": [], "next_cursor": None}
    rows = [r for r in ctx.directory.mailbox_list(domain=where[0], tenant=where[1])
            if scope.allows(r["tenant"]) and _matches(r["address"], q)
            and (enabled is None or bool(r["enabled"]) == enabled)]
    result = paginate(rows, lambda r: r["address"], page)
    usage = MailboxUsage(ctx)
    result["items"] = [_mailbox_out(ctx, r, usage) for r in result["items"]]
    return result


@router.post("/mailboxes", response_model=m.Mailbox, status_code=201, tags=["mailboxes"])
def create_mailbox(body: m.MailboxIn, scope: Scope = Depends(get_scope),
                   ctx: WebContext = Depends(get_ctx)) -> dict[str, Any]:
    try:
        _, dom = split_address(body.address)
    except AddressError as exc:
        raise Problem(422, "Unprocessable Content", str(exc)) from None
    visible_domain(ctx, scope, dom)
    quota = _quota(body.quota)
    if quota is None:
        quota = int(ctx.cfg["directory.default_quota"])
    pw = hash_password(body.password) if body.password else None
    try:
        address = ctx.directory.mailbox_add(body.address, pw, quota_bytes=quota, enabled=body.enabled)
    except DirectoryError as exc:
        raise directory_problem(exc) from None
    return _mailbox_out(ctx, visible_mailbox(ctx, scope, address))


@router.get("/mailboxes/{address}", response_model=m.Mailbox, tags=["mailboxes"])
def get_mailbox(address: str, scope: Scope = Depends(get_scope), ctx: WebContext = Depends(get_ctx)) -> dict:
    return _mailbox_out(ctx, visible_mailbox(ctx, scope, address))


@router.patch("/mailboxes/{address}", response_model=m.Mailbox, tags=["mailboxes"])
def update_mailbox(address: str, body: m.MailboxPatch, scope: Scope = Depends(get_scope),
                   ctx: WebContext = Depends(get_ctx)) -> dict[str, Any]:
    row = visible_mailbox(ctx, scope, address)
    values: dict[str, Any] = {}
    if body.password is not None:
        values["password_hash"] = hash_password(body.password)
    if body.quota is not None:
        values["quota_bytes"] = _quota(body.quota)
    if body.enabled is not None:
        values["enabled"] = body.enabled
    if values:
        ctx.directory.mailbox_set(row["address"], **values)
    return _mailbox_out(ctx, visible_mailbox(ctx, scope, row["address"]))


@router.delete("/mailboxes/{address}", status_code=204, tags=["mailboxes"])
def delete_mailbox(address: str, scope: Scope = Depends(get_scope), ctx: WebContext = Depends(get_ctx)) -> Response:
    row = visible_mailbox(ctx, scope, address)
    ctx.directory.mailbox_rm(row["address"])
    return Response(status_code=204)


# --- aliases -----------------------------------------------------------------------------------

def visible_alias(ctx: WebContext, scope: Scope, source: str) -> dict[str, Any]:
    return _visible_row(scope, source, "alias", "source", ctx.directory.alias_list)


@router.get("/aliases", response_model=m.AliasPage, tags=["aliases"])
def list_aliases(domain: str | None = Query(None, max_length=253), tenant: str | None = Query(None, max_length=63),
                 q: str | None = Q, page: PageParams = Depends(page_params), scope: Scope = Depends(get_scope),
                 ctx: WebContext = Depends(get_ctx)) -> dict[str, Any]:
    where = _listing_filter(ctx, scope, domain, tenant)
    if where is None:
        return {"items": [], "next_cursor": None}
    rows = [r for r in ctx.directory.alias_list(domain=where[0], tenant=where[1])
            if scope.allows(r["tenant"]) and (_matches(r["source"], q) or any(_matches(t, q) for t in r["targets"]))]
    return paginate(rows, lambda r: r["source"], page)


@router.post("/aliases", response_model=m.Alias, status_code=201, tags=["aliases"])
def create_alias(body: m.AliasIn, scope: Scope = Depends(get_scope),
                 ctx: WebContext = Depends(get_ctx)) -> dict[str, Any]:
    try:
        _, dom = split_address(body.source)
    except AddressError as exc:
        raise Problem(422, "Unprocessable Content", str(exc)) from None
    visible_domain(ctx, scope, dom)
    try:
        ctx.directory.alias_add(body.source, body.targets)
    except DirectoryError as exc:
        raise directory_problem(exc) from None
    return visible_alias(ctx, scope, body.source)


@router.get("/aliases/{source}", response_model=m.Alias, tags=["aliases"])
def get_alias(source: str, scope: Scope = Depends(get_scope), ctx: WebContext = Depends(get_ctx)) -> dict:
    return visible_alias(ctx, scope, source)


@router.put("/aliases/{source}", response_model=m.Alias, tags=["aliases"])
def replace_alias(source: str, body: m.AliasTargets, scope: Scope = Depends(get_scope),
                  ctx: WebContext = Depends(get_ctx)) -> dict[str, Any]:
    row = visible_alias(ctx, scope, source)
    try:
        wanted = set(ctx.directory.alias_add(row["source"], body.targets)) & {
            _norm(t) for t in body.targets}
        stale = [t for t in row["targets"] if t not in wanted]
        if stale:
            ctx.directory.alias_rm(row["source"], stale)
    except DirectoryError as exc:
        raise directory_problem(exc) from None
    return visible_alias(ctx, scope, row["source"])


def _norm(address: str) -> str:
    local, dom = split_address(address)
    return f"{local}@{dom}"


@router.delete("/aliases/{source}", status_code=204, tags=["aliases"])
def delete_alias(source: str, scope: Scope = Depends(get_scope), ctx: WebContext = Depends(get_ctx)) -> Response:
    row = visible_alias(ctx, scope, source)
    ctx.directory.alias_rm(row["source"])
    return Response(status_code=204)
