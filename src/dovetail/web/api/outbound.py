"""Outbound over the REST API: transports, DKIM keys, send limits and SMTP credentials.

Each route calls what the CLI calls (:mod:`dovetail.outbound`); this module adds the tenant wall.
A tenant caller sees and changes only what is its own: sender and sender-domain rules of its
domains, its tenant rule, its domains' keys, its credentials; another tenant's object is 404, as
elsewhere. Recipient and default rules route every tenant's mail, and send limits are what the
operator allows a tenant: tenant callers may read those, only an admin changes them (403).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Response

from ...httpapi.deps import Scope, get_scope
from ...httpapi.problems import Problem
from ...outbound.credentials import CredentialError, SmtpCredentials
from ...outbound.keys import DkimKeyError, DkimKeys, KeyInfo
from ...outbound.limits import SendLimiter
from ...outbound.routing import describe
from ...outbound.transports import Transport, TransportError, Transports, rule_key
from ...vault import credentials_sealer
from ..context import WebContext, get_ctx
from . import outbound_models as om
from .directory import visible_domain

router = APIRouter()

RuleKind = Literal["recipient", "sender", "domain", "tenant", "default"]
DkimAction = Literal["generate", "rotate", "activate", "retire"]
MatchPath = Path(min_length=1, max_length=320, description="the domain, address or tenant; '*' for default")


def _unprocessable(text: str) -> Problem:
    return Problem(422, "Unprocessable Content", text)


# --- transports --------------------------------------------------------------------------------

def transports(ctx: WebContext) -> Transports:
    """The transport table, read fresh on every call, with relay secrets sealed by the data directory's key."""
    return Transports(ctx.engine, check_interval=0, sealer=credentials_sealer(ctx.cfg.data_dir, ctx.engine))


def rule_owner(ctx: WebContext, scope_: str, match: str) -> str | None:
    """The tenant a rule belongs to: its sender domain's, or the tenant it names; None for the
    recipient and default rules, which route everyone's mail."""
    if scope_ == "tenant":
        found = ctx.directory.tenant_ref(match)
        return found.name if found is not None else match
    if scope_ in ("sender", "domain"):
        return ctx.directory.domain_tenant(match.rpartition("@")[2])
    return None


def _visible_rule(ctx: WebContext, scope: Scope, scope_: str, match: str) -> bool:
    if scope.is_admin:
        return True
    owner = rule_owner(ctx, scope_, match)
    return owner is not None and scope.allows(owner)


def _transport_out(t: Transport) -> dict[str, Any]:
    return {"scope": t.scope, "match": t.match, "rule": describe(t.scope, t.match), "transport": t.name,
            "kind": t.kind, "host": t.host, "port": t.port, "tls": t.tls, "username": t.username,
            "secret_set": bool(t.secret)}


def _rule_for_change(ctx: WebContext, scope: Scope, rule: str, match: str) -> tuple[str, str]:
    """The stored (scope, match) of a rule the caller may change: 422 for bad syntax, 403 for a tenant
    touching a rule of everyone, 404 for another tenant's (or no such) domain or tenant."""
    try:
        key = rule_key(rule, match)
    except TransportError as exc:
        raise _unprocessable(str(exc)) from None
    if not scope.is_admin:
        if key[0] in ("recipient", "default"):
            raise Problem(403, "Forbidden", "recipient and default rules route every tenant's mail: an admin "
                                            "sets them")
        if not _visible_rule(ctx, scope, *key):
            raise Problem(404, "Not Found", "no such " + ("tenant" if key[0] == "tenant" else "domain"))
    return key


def _transport_problem(exc: TransportError) -> Problem:
    text = str(exc)
    if text.startswith("no transport rule"):
        return Problem(404, "Not Found", text)
    if text.startswith("no tenant"):
        return Problem(404, "Not Found", text)
    return _unprocessable(text)


@router.get("/transports", response_model=om.TransportList, tags=["transports"])
def list_transports(scope: Scope = Depends(get_scope), ctx: WebContext = Depends(get_ctx)) -> dict[str, Any]:
    """Transport rules the caller may see, in the order they apply (``dovetail transport list``)."""
    return {"items": [_transport_out(t) for t in transports(ctx).list()
                      if _visible_rule(ctx, scope, t.scope, t.match)]}


@router.get("/transports/resolve", response_model=om.RouteOut, tags=["transports"])
def resolve_transport(sender: str = Query(..., max_length=320, description="envelope sender; '<>' for null"),
                      recipient: str = Query(..., min_length=1, max_length=320),
                      tenant: str | None = Query(None, max_length=63, description="the message's tenant (default: "
                                                                                  "the sender domain's)"),
                      scope: Scope = Depends(get_scope), ctx: WebContext = Depends(get_ctx)) -> dict[str, Any]:
    """Which transport mail from ``sender`` to ``recipient`` takes and which rule chose it
    (``dovetail transport resolve``). Tenant callers ask about their own mail only."""
    if not scope.is_admin:
        if tenant is not None and not scope.allows(tenant):
            raise Problem(404, "Not Found", "no such tenant")
        tenant = scope.tenant
        bare = sender.strip().strip("<>")
        if bare and not scope.allows(ctx.directory.domain_tenant(bare.rpartition("@")[2])):
            raise Problem(404, "Not Found", "no such domain")
    try:
        route = transports(ctx).explain(sender, recipient, tenant)
    except TransportError as exc:
        raise _transport_problem(exc) from None
    route.pop("secret", None)
    return route


@router.put("/transports/{rule}/{match}", response_model=om.TransportOut, tags=["transports"])
def set_transport(rule: RuleKind, body: om.TransportIn, match: str = MatchPath, scope: Scope = Depends(get_scope),
                  ctx: WebContext = Depends(get_ctx)) -> dict[str, Any]:
    """Add or replace a rule (``dovetail transport set``): everything is checked first, nothing half-saved."""
    key = _rule_for_change(ctx, scope, rule, match)
    try:
        made = transports(ctx).set_nexthop(*key, body.relay, tls=body.tls, username=body.username or None,
                                           secret=body.secret or None, dns_check=body.dns_check)
    except TransportError as exc:
        raise _transport_problem(exc) from None
    return _transport_out(made)


@router.delete("/transports/{rule}/{match}", status_code=204, tags=["transports"])
def delete_transport(rule: RuleKind, match: str = MatchPath, scope: Scope = Depends(get_scope),
                     ctx: WebContext = Depends(get_ctx)) -> Response:
    key = _rule_for_change(ctx, scope, rule, match)
    try:
        transports(ctx).remove(*key)
    except TransportError as exc:
        raise _transport_problem(exc) from None
    return Response(status_code=204)


# --- DKIM keys ---------------------------------------------------------------------------------

def dkim_keys(ctx: WebContext) -> DkimKeys:
    return DkimKeys.for_service(ctx.engine, ctx.layout.dkim, ctx.cfg["server.user"])


def key_out(k: KeyInfo) -> dict[str, Any]:
    return {"domain": k.domain, "selector": k.selector, "algorithm": k.algorithm, "state": k.state,
            "status": k.status, "problem": k.problem, "record": k.record_name, "txt": k.txt,
            "created_at": k.created_at}


NEXT_STEP = {
    "rotate": "Publish the new selectors' TXT records, then activate them.",
    "activate": "The old selectors stay published until you retire them (wait a few days).",
}


@router.get("/dkim", response_model=om.DkimKeyList, tags=["dkim"])
def list_dkim(domain: str | None = Query(None, max_length=253), scope: Scope = Depends(get_scope),
              ctx: WebContext = Depends(get_ctx)) -> dict[str, Any]:
    """Keys per domain with their state, ``active (unreadable: …)`` when the services cannot load one."""
    store = dkim_keys(ctx)
    if domain:
        keys = store.list(visible_domain(ctx, scope, domain).name, check=True)
    elif scope.is_admin:
        keys = store.list(check=True)
    else:
        keys = [k for d in ctx.directory.domain_list(scope.tenant) for k in store.list(d.name, check=True)]
    return {"items": [key_out(k) for k in keys]}


@router.get("/domains/{domain}/dkim", response_model=om.DkimKeyList, tags=["dkim"])
def domain_dkim(domain: str, scope: Scope = Depends(get_scope), ctx: WebContext = Depends(get_ctx)) -> dict:
    return {"items": [key_out(k) for k in dkim_keys(ctx).list(visible_domain(ctx, scope, domain).name, check=True)]}


@router.get("/domains/{domain}/dkim/{selector}", response_model=om.DkimKeyOut, tags=["dkim"])
def dkim_selector(domain: str, selector: str = Path(max_length=63), scope: Scope = Depends(get_scope),
                  ctx: WebContext = Depends(get_ctx)) -> dict[str, Any]:
    name = visible_domain(ctx, scope, domain).name
    for k in dkim_keys(ctx).list(name, check=True):
        if k.selector == selector:
            return key_out(k)
    raise Problem(404, "Not Found", f"no DKIM selector {selector!r} for {name}")


@router.post("/domains/{domain}/dkim/{action}", response_model=om.DkimChange, tags=["dkim"])
def dkim_action(domain: str, action: DkimAction, scope: Scope = Depends(get_scope),
                ctx: WebContext = Depends(get_ctx)) -> dict[str, Any]:
    """``generate`` (active keys for a domain that has none), ``rotate`` (new selectors, published but not
    signing), ``activate`` (the published ones sign; the old ones retire) or ``retire`` (withdraw them)."""
    name = visible_domain(ctx, scope, domain).name
    store = dkim_keys(ctx)
    method = {"generate": store.ensure, "rotate": store.rotate, "activate": store.activate,
              "retire": store.retire}[action]
    try:
        changed = method(name)
    except DkimKeyError as exc:
        raise Problem(409, "Conflict", str(exc)) from None
    return {"domain": name, "action": action, "changed": [key_out(k) for k in changed],
            "keys": [key_out(k) for k in store.list(name, check=True)], "next_step": NEXT_STEP.get(action, "")}


# --- send limits -------------------------------------------------------------------------------

def _tenant_name(ctx: WebContext, scope: Scope, tenant: str) -> str:
    found = ctx.directory.tenant_ref(tenant) if scope.allows(tenant) else None
    if found is None:
        raise Problem(404, "Not Found", "no such tenant")
    return found.name


def limits_of(ctx: WebContext, tenant: str) -> dict[str, Any]:
    limiter = SendLimiter(ctx.engine)
    _, lim = limiter.limits(tenant)
    return {"tenant": tenant, "per_minute": lim.per_minute, "per_day": lim.per_day,
            "sent_today": limiter.sent_today(tenant)}


@router.get("/tenants/{tenant}/send-limits", response_model=om.SendLimitsOut, tags=["send limits"])
def get_send_limits(tenant: str, scope: Scope = Depends(get_scope), ctx: WebContext = Depends(get_ctx)) -> dict:
    return limits_of(ctx, _tenant_name(ctx, scope, tenant))


@router.put("/tenants/{tenant}/send-limits", response_model=om.SendLimitsOut, tags=["send limits"])
def set_send_limits(tenant: str, body: om.SendLimitsIn, scope: Scope = Depends(get_scope),
                    ctx: WebContext = Depends(get_ctx)) -> dict[str, Any]:
    """A tenant's sending rate and daily quota (``dovetail send-limits``); 0 is unlimited. Admins only."""
    name = _tenant_name(ctx, scope, tenant)
    scope.require_admin()
    try:
        SendLimiter(ctx.engine).set_limits(name, body.per_minute, body.per_day)
    except ValueError as exc:
        raise _unprocessable(str(exc)) from None
    return limits_of(ctx, name)


# --- SMTP credentials --------------------------------------------------------------------------

@router.get("/smtp-credentials", response_model=om.SmtpCredentialList, tags=["smtp credentials"])
def list_credentials(tenant: str | None = Query(None, max_length=63), scope: Scope = Depends(get_scope),
                     ctx: WebContext = Depends(get_ctx)) -> dict[str, Any]:
    """SMTP credentials for submission, user names only (the secrets are stored hashed)."""
    if tenant and not scope.allows(tenant):
        return {"items": []}
    return {"items": SmtpCredentials(ctx.engine).list(tenant or scope.tenant_filter())}


@router.post("/smtp-credentials", response_model=om.SmtpCredentialCreated, status_code=201,
             tags=["smtp credentials"])
def create_credential(body: om.SmtpCredentialIn, response: Response, scope: Scope = Depends(get_scope),
                      ctx: WebContext = Depends(get_ctx)) -> dict[str, Any]:
    """New credentials for a tenant; the secret is in this answer only."""
    tenant = body.tenant or scope.tenant
    if not tenant:
        raise _unprocessable("name the tenant the credentials are for")
    name = _tenant_name(ctx, scope, tenant)
    store = SmtpCredentials(ctx.engine)
    try:
        made = store.add(name, body.description)
    except CredentialError as exc:
        raise _unprocessable(str(exc)) from None
    row = next(r for r in store.list(name) if r["username"] == made.username)
    response.headers["Cache-Control"] = "no-store"
    return {**row, "secret": made.secret}


@router.delete("/smtp-credentials/{username}", status_code=204, tags=["smtp credentials"])
def revoke_credential(username: str = Path(max_length=128), scope: Scope = Depends(get_scope),
                      ctx: WebContext = Depends(get_ctx)) -> Response:
    try:
        SmtpCredentials(ctx.engine).remove(username, scope.tenant_filter())
    except CredentialError as exc:
        raise Problem(404, "Not Found", str(exc)) from None
    return Response(status_code=204)
