"""UI pages over outbound: transports, DKIM keys, send limits, SMTP credentials, and where the replies
engine takes mail from (reply inboxes, IMAP sources).

Every page and form calls the REST routes' functions (:mod:`.api.outbound`, :mod:`.api.reply_sources`),
so the tenant wall, the checks and the error texts are the API's; a refused form comes back with the
reason and the API's status, an accepted one redirects (post/redirect/get). Forms carry the CSRF token.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from ..httpapi.deps import Posted, RowId, Scope
from ..httpapi.problems import Problem
from ..replies.api import get_service
from ..replies.service import RepliesService
from .api import outbound as apio
from .api import outbound_models as om
from .api import reply_sources as apir
from .context import WebContext, get_ctx
from .integrations import dns_records
from .replies_view import available as replies_available
from .ui import back, form_of, render, session_of

router = APIRouter(include_in_schema=False)

PageFn = Callable[..., Response]


def _scope(request: Request) -> Scope:
    return session_of(request)["scope"]


def _reason(exc: Exception) -> str:
    if isinstance(exc, Problem):
        return exc.detail or exc.title
    errors = getattr(exc, "errors", None)
    if callable(errors):
        return "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in errors())
    return str(exc)


def _act(request: Request, posted: dict[str, str], page: PageFn, ctx: WebContext,
         action: Callable[[dict[str, str], Scope], str], done_url: str) -> Response:
    """Run a form's ``action`` (which answers the notice to show) after the CSRF check; a refusal shows
    the page again with the reason and the API's status."""
    session = session_of(request)
    form = form_of(request, session, posted)
    try:
        notice = action(form, session["scope"])
    except (Problem, ValueError) as exc:
        status = exc.status if isinstance(exc, Problem) else 422
        return page(request, ctx, error=_reason(exc), status=status, form=form)
    return back(done_url, notice)


def _tenant_names(ctx: WebContext, scope: Scope) -> list[str]:
    return [t["name"] for t in ctx.directory.tenant_list() if scope.allows(t["name"])]


# --- transports --------------------------------------------------------------------------------

@router.get("/transports")
def transports_route(request: Request, sender: str = "", recipient: str = "",
                     ctx: WebContext = Depends(get_ctx)) -> Response:
    route: dict[str, Any] | None = None
    error = ""
    if recipient:
        try:
            route = apio.resolve_transport(sender[:320], recipient[:320], None, _scope(request), ctx)
        except Problem as exc:
            error = _reason(exc)
    return transports_page(request, ctx, route=route, error=error, status=422 if error else 200,
                           form={"sender": sender[:320], "recipient": recipient[:320]})


def transports_page(request: Request, ctx: WebContext, error: str = "", status: int = 200,
                    form: dict[str, str] | None = None, route: dict[str, Any] | None = None) -> Response:
    scope = _scope(request)
    rules = apio.list_transports(scope, ctx)["items"]
    return render(request, "transports.html", status=status, rules=rules, route=route, error=error,
                  form=form or {}, rule_kinds=["sender", "domain", "tenant"] + (
                      ["recipient", "default"] if scope.is_admin else []))


@router.post("/transports")
def transports_set(request: Request, posted: Posted, ctx: WebContext = Depends(get_ctx)) -> Response:
    def act(form: dict[str, str], scope: Scope) -> str:
        relay = form.get("relay", "").strip()[:300] or None
        body = om.TransportIn(relay=relay, tls=form.get("tls", "starttls"),  # type: ignore[arg-type]
                              username=form.get("username", "")[:320] or None,
                              secret=form.get("secret", "")[:1024] or None,
                              dns_check=form.get("no_dns_check") != "yes")
        rule = form.get("rule", "")
        if rule not in ("recipient", "sender", "domain", "tenant", "default"):
            raise Problem(422, detail=f"rule kind {rule!r}: must be one of recipient, sender, domain, tenant, default")
        made = apio.set_transport(rule, body, form.get("match", "").strip()[:320], scope, ctx)  # type: ignore[arg-type]
        return f"{made['scope']} {made['match']} → {made['transport']}"

    return _act(request, posted, transports_page, ctx, act, "/transports")


@router.post("/transports/{rule}/{match}/delete")
def transports_delete(request: Request, posted: Posted, rule: str, match: str,
                      ctx: WebContext = Depends(get_ctx)) -> Response:
    def act(form: dict[str, str], scope: Scope) -> str:
        if rule not in ("recipient", "sender", "domain", "tenant", "default"):
            raise Problem(404, "Not Found", "no such rule")
        apio.delete_transport(rule, match, scope, ctx)  # type: ignore[arg-type]
        return f"Rule {rule} {match} removed."

    return _act(request, posted, transports_page, ctx, act, "/transports")


# --- DKIM keys ---------------------------------------------------------------------------------

@router.get("/dkim")
def dkim_route(request: Request, ctx: WebContext = Depends(get_ctx)) -> Response:
    return dkim_page(request, ctx)


def dkim_page(request: Request, ctx: WebContext, error: str = "", status: int = 200,
              form: dict[str, str] | None = None) -> Response:
    scope = _scope(request)
    keys = apio.list_dkim(None, scope, ctx)["items"]
    domains = []
    for d in ctx.directory.domain_list(scope.tenant_filter()):
        if not scope.allows(d.tenant):
            continue
        mine = [k for k in keys if k["domain"] == d.name]
        states = {k["state"] for k in mine}
        try:
            records = dns_records(ctx.cfg, ctx.engine, d.name)
        except Exception as exc:  # noqa: BLE001 - the page shows why instead of failing
            records, error = [], error or f"DNS records of {d.name}: {exc}"
        domains.append({"name": d.name, "tenant": d.tenant, "key_list": mine, "records": records,
                        "can": {"generate": "active" not in states, "rotate": bool(mine) and "published" not in states,
                                "activate": "published" in states, "retire": "retiring" in states}})
    return render(request, "dkim.html", status=status, domains=domains, error=error)


@router.post("/dkim/{domain}/{action}")
def dkim_act(request: Request, posted: Posted, domain: str, action: str,
             ctx: WebContext = Depends(get_ctx)) -> Response:
    def act(form: dict[str, str], scope: Scope) -> str:
        if action not in ("generate", "rotate", "activate", "retire"):
            raise Problem(404, "Not Found", "no such action")
        done = apio.dkim_action(domain, action, scope, ctx)  # type: ignore[arg-type]
        selectors = ", ".join(k["selector"] for k in done["changed"]) or "nothing to do"
        past = {"generate": "generated", "rotate": "rotated", "activate": "activated", "retire": "retired"}[action]
        return f"{done['domain']}: {past} ({selectors}). {done['next_step']}".strip()

    return _act(request, posted, dkim_page, ctx, act, "/dkim")


# --- send limits -------------------------------------------------------------------------------

@router.get("/send-limits")
def limits_route(request: Request, ctx: WebContext = Depends(get_ctx)) -> Response:
    return limits_page(request, ctx)


def limits_page(request: Request, ctx: WebContext, error: str = "", status: int = 200,
                form: dict[str, str] | None = None) -> Response:
    scope = _scope(request)
    rows = [apio.limits_of(ctx, name) for name in _tenant_names(ctx, scope)]
    return render(request, "send_limits.html", status=status, limits=rows, error=error, form=form or {})


@router.post("/send-limits/{tenant}")
def limits_set(request: Request, posted: Posted, tenant: str, ctx: WebContext = Depends(get_ctx)) -> Response:
    def act(form: dict[str, str], scope: Scope) -> str:
        try:
            per_minute, per_day = int(form.get("per_minute") or 0), int(form.get("per_day") or 0)
        except ValueError:
            raise Problem(422, detail="limits are whole numbers (0: unlimited)") from None
        if per_minute < 0 or per_day < 0:
            raise Problem(422, detail="limits must not be negative (0: unlimited)")
        done = apio.set_send_limits(tenant, om.SendLimitsIn(per_minute=per_minute, per_day=per_day), scope, ctx)
        return (f"{done['tenant']}: {done['per_minute'] or 'unlimited'} per minute, "
                f"{done['per_day'] or 'unlimited'} recipients per day.")

    return _act(request, posted, limits_page, ctx, act, "/send-limits")


# --- SMTP credentials --------------------------------------------------------------------------

@router.get("/smtp-credentials")
def credentials_route(request: Request, ctx: WebContext = Depends(get_ctx)) -> Response:
    return credentials_page(request, ctx)


def credentials_page(request: Request, ctx: WebContext, error: str = "", status: int = 200,
                     form: dict[str, str] | None = None, created: dict[str, Any] | None = None) -> Response:
    scope = _scope(request)
    rows = apio.list_credentials(None, scope, ctx)["items"]
    return render(request, "smtp_credentials.html", status=status, credentials=rows, created=created, error=error,
                  form=form or {}, tenant_names=_tenant_names(ctx, scope))


@router.post("/smtp-credentials")
def credentials_add(request: Request, posted: Posted, ctx: WebContext = Depends(get_ctx)) -> Response:
    session = session_of(request)
    form = form_of(request, session, posted)
    scope = session["scope"]
    try:
        body = om.SmtpCredentialIn(tenant=form.get("tenant", "")[:63] or None,
                                   description=form.get("description", "")[:200])
        made = apio.create_credential(body, Response(), scope, ctx)
    except (Problem, ValueError) as exc:
        return credentials_page(request, ctx, error=_reason(exc), status=exc.status if isinstance(exc, Problem)
                                else 422, form=form)
    response = credentials_page(request, ctx, created=made, status=201)
    response.headers["Cache-Control"] = "no-store"
    return response


@router.post("/smtp-credentials/{username}/revoke")
def credentials_revoke(request: Request, posted: Posted, username: str,
                       ctx: WebContext = Depends(get_ctx)) -> Response:
    def act(form: dict[str, str], scope: Scope) -> str:
        apio.revoke_credential(username[:128], scope, ctx)
        return f"Credentials {username} revoked."

    return _act(request, posted, credentials_page, ctx, act, "/smtp-credentials")


# --- reply inboxes and IMAP sources ------------------------------------------------------------

@router.get("/reply-sources")
def sources_route(request: Request, ctx: WebContext = Depends(get_ctx)) -> Response:
    return sources_page(request, ctx)


def sources_page(request: Request, ctx: WebContext, error: str = "", status: int = 200,
                 form: dict[str, str] | None = None) -> Response:
    scope = _scope(request)
    if not replies_available(ctx.engine):
        raise Problem(404, "Not Found", "the replies engine's tables are not installed")
    svc = _service(request)
    return render(request, "reply_sources.html", status=status, error=error, form=form or {},
                  inboxes=apir.list_inboxes(None, scope, ctx, svc)["items"],
                  sources=apir.list_imap_sources(None, scope, ctx)["items"], tenant_names=_tenant_names(ctx, scope))


def _service(request: Request) -> RepliesService:
    """The replies service of this app (one per app, as the replies API opens it)."""
    return get_service(request)


@router.post("/reply-sources/inboxes")
def inbox_add(request: Request, posted: Posted, ctx: WebContext = Depends(get_ctx)) -> Response:
    def act(form: dict[str, str], scope: Scope) -> str:
        made = apir.add_inbox(om.ReplyInboxIn(address=form.get("address", "").strip()[:320]), scope,
                              _service(request))
        return f"{made['address']} is a reply inbox."

    return _act(request, posted, sources_page, ctx, act, "/reply-sources")


@router.post("/reply-sources/inboxes/{address}/delete")
def inbox_remove(request: Request, posted: Posted, address: str, ctx: WebContext = Depends(get_ctx)) -> Response:
    def act(form: dict[str, str], scope: Scope) -> str:
        apir.remove_inbox(address[:320], scope, _service(request))
        return f"{address} is no longer a reply inbox."

    return _act(request, posted, sources_page, ctx, act, "/reply-sources")


@router.post("/reply-sources/imap")
def imap_add(request: Request, posted: Posted, ctx: WebContext = Depends(get_ctx)) -> Response:
    def act(form: dict[str, str], scope: Scope) -> str:
        try:
            port = int(form.get("port") or 993)
        except ValueError:
            raise Problem(422, detail="the port is a number 1-65535") from None
        body = om.ImapSourceIn(tenant=form.get("tenant", "")[:63] or None, name=form.get("name", "")[:200],
                               host=form.get("host", "").strip()[:253], port=port,
                               tls=form.get("tls", "implicit"),  # type: ignore[arg-type]
                               username=form.get("username", "")[:320], password=form.get("password", "")[:1024],
                               folder=form.get("folder", "")[:500] or "INBOX")
        made = apir.add_imap_source(body, scope, ctx, _service(request))
        return f"IMAP source {made['name']} added ({made['host']}:{made['port']})."

    return _act(request, posted, sources_page, ctx, act, "/reply-sources")


@router.post("/reply-sources/imap/{source_id}/delete")
def imap_remove(request: Request, posted: Posted, source_id: RowId, ctx: WebContext = Depends(get_ctx)) -> Response:
    def act(form: dict[str, str], scope: Scope) -> str:
        apir.remove_imap_source(source_id, scope, ctx)
        return f"IMAP source {source_id} removed."

    return _act(request, posted, sources_page, ctx, act, "/reply-sources")
