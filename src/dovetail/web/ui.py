"""The admin UI: server-rendered Jinja2 pages, enhanced by htmx (``hx-boost``), usable without it.

Every form posts to a route here, which calls the same functions as the REST API (so the tenant
wall and validation are the API's) and answers with a redirect (post/redirect/get) or, when the
input was refused, the same page with the reason and status 4xx. Forms carry the session's CSRF
token; the login form, which has no session yet, uses a double-submit cookie.
"""

from __future__ import annotations

import datetime as dt
import hmac
import secrets
import time
import urllib.parse
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from ..httpapi.deps import Posted, RowId, Scope
from ..httpapi.problems import Problem
from . import assets, auth, counters, replies_view
from .api import directory as apid
from .api import models as m
from .api import queue as apiq
from .api.stats import queue_sizes
from .authbadges import badges
from .chart import flow_svg
from .context import WebContext, get_ctx
from .integrations import service_health
from .mailview import render_body
from .pagination import PageParams

templates = Jinja2Templates(env=assets.template_environment())  # read now, before the master forks
router = APIRouter(include_in_schema=False)

LOGIN_CSRF_COOKIE = "dovetail_login_csrf"


def _fmt_bytes(n: int | None) -> str:
    n = int(n or 0)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _fmt_time(ts: float | None) -> str:
    """Unix seconds as every page shows a time: to the second, in the server's zone, which is named."""
    if not ts:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(ts))


def _fmt_when(value: Any) -> str:
    """A stored timestamp (datetime, Unix seconds or ISO text) as ``_fmt_time`` shows it.

    The database keeps naive datetimes in UTC; they are shown in the server's zone like queue times.
    """
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, (int, float)):
        return _fmt_time(value)
    if isinstance(value, dt.datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
        return _fmt_time(aware.timestamp())
    return str(value)


def _fmt_events(types: Any) -> str:
    """A webhook endpoint's event types: ``*`` reads "all events"."""
    names = [types] if isinstance(types, str) else list(types or [])
    return "all events" if not names or "*" in names else ", ".join(str(n) for n in names)


templates.env.filters["bytes"] = _fmt_bytes
templates.env.filters["when"] = _fmt_when
templates.env.filters["ts"] = _fmt_time
templates.env.filters["events"] = _fmt_events
templates.env.filters["urlq"] = lambda s: urllib.parse.quote(str(s), safe="@")


# --- sessions and errors -----------------------------------------------------------------------

def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def session_of(request: Request) -> dict[str, Any]:
    """The logged-in session; 401 (→ redirect to the login page) without one."""
    session = request.app.state.auth.session(request)
    if session is None:
        raise Problem(401, "Unauthorized", "log in first")
    return session


def form_of(request: Request, session: dict[str, Any], posted: dict[str, str]) -> dict[str, str]:
    """The posted form after the CSRF check (header from htmx, or the hidden ``csrf`` field)."""
    request.app.state.auth.check_csrf(request, session, posted.get("csrf", ""))
    return posted


def render(request: Request, name: str, status: int = 200, **values: Any) -> HTMLResponse:
    session = getattr(request.state, "session", None)
    ctx: WebContext = request.app.state.ctx
    values.setdefault("notice", request.query_params.get("notice", "")[:300])
    values.setdefault("replies", replies_view.available(ctx.engine))
    return templates.TemplateResponse(request, name, {"session": session, **values}, status_code=status)


def back(url: str, notice: str = "") -> RedirectResponse:
    if notice:
        url += ("&" if "?" in url else "?") + urllib.parse.urlencode({"notice": notice})
    return RedirectResponse(url, status_code=303)


def error_page(request: Request, status: int, title: str, detail: str) -> Response | None:
    """Browser pages get HTML errors and a login redirect; the API and /metrics keep problem JSON."""
    path = request.url.path
    if path.startswith("/api/") or path == "/metrics" or path.startswith("/static/"):
        return None
    if status == 401:
        target = "/login?" + urllib.parse.urlencode({"next": path})
        if request.headers.get("hx-request"):
            return Response(status_code=204, headers={"HX-Redirect": target})
        return RedirectResponse(target, status_code=303)
    if "text/html" not in request.headers.get("accept", "text/html"):
        return None
    try:
        request.app.state.auth.session(request)
    except Exception:  # noqa: BLE001 - an error page must render even when the database is down
        request.state.session = None
    return render(request, "error.html", status=status, status_code=status, title=title, detail=detail,
                  replies=False)


def _scope(session: dict[str, Any]) -> Scope:
    return session["scope"]


# --- login -------------------------------------------------------------------------------------

def _safe_next(value: str | None) -> str:
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


@router.get("/login")
def login_form(request: Request, next: str = "/") -> Response:
    token = secrets.token_urlsafe(24)
    response = render(request, "login.html", login_csrf=token, next=_safe_next(next), error="")
    response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", secure=_secure(request),
                        max_age=3600, path="/login")
    return response


@router.post("/login")
def login(request: Request, posted: Posted) -> Response:
    form = posted
    email = str(form.get("email", ""))[:320].strip()
    password = str(form.get("password", ""))[:1024]
    nxt = _safe_next(str(form.get("next", "/")))
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    sent = str(form.get("csrf", ""))
    if not cookie or not hmac.compare_digest(cookie.encode(), sent.encode()):
        raise Problem(403, "Forbidden", "the login form expired; reload the page and try again")
    a: auth.Auth = request.app.state.auth
    client = request.client.host if request.client else "?"
    keys = (f"ip:{client}", f"user:{email.lower()}")
    wait = a.throttle.retry_after(*keys)
    if wait:
        response = render(request, "login.html", status=429, login_csrf=cookie, next=nxt, email=email,
                          error=f"Too many failed logins. Try again in {wait} seconds.")
        response.headers["Retry-After"] = str(wait)
        return response
    user = auth.check_login(a.engine, email, password)
    if user is None:
        a.throttle.failed(*keys)
        return render(request, "login.html", status=401, login_csrf=cookie, next=nxt, email=email,
                      error="Wrong email or password.")
    a.throttle.succeeded(f"user:{email.lower()}")
    value, _csrf = a.create_session(user)
    redirect = RedirectResponse(nxt, status_code=303)
    redirect.set_cookie(auth.SESSION_COOKIE, value, httponly=True, samesite="strict", secure=_secure(request),
                        max_age=int(auth.SESSION_LIFETIME.total_seconds()), path="/")
    redirect.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return redirect


@router.post("/logout")
def logout(request: Request, posted: Posted) -> Response:
    session = session_of(request)
    form_of(request, session, posted)
    request.app.state.auth.end_session(request)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(auth.SESSION_COOKIE, path="/")
    return response


# --- dashboard ---------------------------------------------------------------------------------

def _flow(ctx: WebContext) -> dict[str, Any]:
    counters.flush(ctx.engine)
    series = counters.series(ctx.engine, 60)
    return {"chart": flow_svg(series), "series": series}


@router.get("/")
def dashboard(request: Request, ctx: WebContext = Depends(get_ctx)) -> Response:
    session = session_of(request)
    scope = _scope(session)
    counts = ctx.directory.counts(scope.tenant_filter())
    values: dict[str, Any] = {
        "domains": counts["domains"], "mailboxes": counts["mailboxes"], "aliases": counts["aliases"],
        "replies_today": replies_view.replies_today(ctx.engine, scope),
    }
    if scope.is_admin:
        values.update(_flow(ctx), queue=queue_sizes(ctx), health=service_health(ctx.cfg),
                      tenants=counts["tenants"])
    return render(request, "dashboard.html", **values)


@router.get("/ui/flow")
def flow_fragment(request: Request, ctx: WebContext = Depends(get_ctx)) -> Response:
    _scope(session_of(request)).require_admin()
    return render(request, "_flow.html", **_flow(ctx))


# --- tenants and domains -----------------------------------------------------------------------

ALL = PageParams(limit=100_000)


@router.get("/tenants")
def tenants_route(request: Request, ctx: WebContext = Depends(get_ctx)) -> Response:
    return tenants_page(request, ctx)


def tenants_page(request: Request, ctx: WebContext, error: str = "", status: int = 200,
                 form: dict[str, str] | None = None) -> Response:
    scope = _scope(session_of(request))
    rows = apid.list_tenants(None, None, ALL, scope, ctx)["items"]
    return render(request, "tenants.html", status=status, tenants=rows, error=error, form=form or {})


@router.post("/tenants")
def tenants_add(request: Request, posted: Posted, ctx: WebContext = Depends(get_ctx)) -> Response:
    session = session_of(request)
    form = form_of(request, session, posted)
    try:
        body = m.TenantIn(name=form.get("name", "")[:63], display_name=form.get("display_name", "")[:200])
        made = apid.create_tenant(body, _scope(session), ctx)
    except (Problem, ValueError) as exc:
        return tenants_page(request, ctx, error=_reason(exc), status=_status(exc), form=form)
    return back(f"/tenants/{made['name']}", f"Tenant {made['name']} created.")


@router.get("/tenants/{tenant}")
def tenant_route(request: Request, tenant: str, ctx: WebContext = Depends(get_ctx)) -> Response:
    return tenant_page(request, tenant, ctx)


def tenant_page(request: Request, tenant: str, ctx: WebContext, error: str = "", status: int = 200,
                form: dict[str, str] | None = None) -> Response:
    scope = _scope(session_of(request))
    row = apid.get_tenant(tenant, scope, ctx)
    domains = apid.list_domains(row["name"], None, None, ALL, scope, ctx)["items"]
    return render(request, "tenant.html", status=status, tenant=row, domains=domains, error=error, form=form or {},
                  global_enforce=ctx.cfg["mx.dmarc_enforce"])


@router.post("/tenants/{tenant}/domains")
def tenant_add_domain(request: Request, posted: Posted, tenant: str, ctx: WebContext = Depends(get_ctx)) -> Response:
    session = session_of(request)
    form = form_of(request, session, posted)
    scope = _scope(session)
    row = apid.get_tenant(tenant, scope, ctx)
    try:
        body = m.DomainIn(name=form.get("name", "")[:253], tenant=row["name"],
                          postmaster=form.get("postmaster") or None)
        made = apid.create_domain(body, scope, ctx)
    except (Problem, ValueError) as exc:
        return tenant_page(request, tenant, ctx, error=_reason(exc), status=_status(exc), form=form)
    return back(f"/domains/{made['name']}", f"Domain {made['display_name']} added.")


ENFORCE_CHOICES = {"inherit": None, "on": True, "off": False}


@router.post("/tenants/{tenant}/dmarc")
def tenant_dmarc(request: Request, posted: Posted, tenant: str, ctx: WebContext = Depends(get_ctx)) -> Response:
    """The tenant's DMARC enforcement (admin): on, off, or inherit (mx.dmarc_enforce)."""
    session = session_of(request)
    form = form_of(request, session, posted)
    choice = form.get("dmarc_enforce", "")
    if choice not in ENFORCE_CHOICES:
        return tenant_page(request, tenant, ctx, error="DMARC enforcement: choose inherit, on or off", status=422)
    row = apid.update_tenant(tenant, m.TenantPatch(dmarc_enforce=ENFORCE_CHOICES[choice]), _scope(session), ctx)
    return back(f"/tenants/{row['name']}", f"DMARC enforcement of {row['name']}: {choice}.")


@router.post("/tenants/{tenant}/delete")
def tenant_delete(request: Request, posted: Posted, tenant: str, ctx: WebContext = Depends(get_ctx)) -> Response:
    session = session_of(request)
    form = form_of(request, session, posted)
    try:
        apid.delete_tenant(tenant, form.get("force") == "yes", _scope(session), ctx)
    except Problem as exc:
        if exc.status == 404:
            raise
        return tenant_page(request, tenant, ctx, error=_reason(exc), status=exc.status)
    return back("/tenants", f"Tenant {tenant} deleted.")


@router.get("/domains/{domain}")
def domain_route(request: Request, domain: str, ctx: WebContext = Depends(get_ctx)) -> Response:
    return domain_page(request, domain, ctx)


def domain_page(request: Request, domain: str, ctx: WebContext, error: str = "", status: int = 200,
                form: dict[str, str] | None = None) -> Response:
    scope = _scope(session_of(request))
    info = apid.get_domain(domain, scope, ctx)
    boxes = apid.list_mailboxes(info["name"], None, None, None, ALL, scope, ctx)["items"]
    aliases = apid.list_aliases(info["name"], None, None, ALL, scope, ctx)["items"]
    return render(request, "domain.html", status=status, domain=info, mailboxes=boxes, aliases=aliases,
                  error=error, form=form or {})


def _reason(exc: Exception) -> str:
    if isinstance(exc, Problem):
        return exc.detail or exc.title
    errors = getattr(exc, "errors", None)
    if callable(errors):
        return "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in errors())
    return str(exc)


def _status(exc: Exception) -> int:
    return exc.status if isinstance(exc, Problem) else 422


def _domain_action(request: Request, posted: dict[str, str], domain: str, ctx: WebContext, action: Any,
                   done: str) -> Response:
    session = session_of(request)
    form = form_of(request, session, posted)
    scope = _scope(session)
    info = apid.get_domain(domain, scope, ctx)
    try:
        message = action(form, scope, info) or done
    except (Problem, ValueError) as exc:
        if isinstance(exc, Problem) and exc.status == 404 and "domain" in exc.detail:
            raise
        return domain_page(request, domain, ctx, error=_reason(exc), status=_status(exc), form=form)
    return back(f"/domains/{urllib.parse.quote(info['name'])}", message)


@router.post("/domains/{domain}/settings")
def domain_settings(request: Request, posted: Posted, domain: str, ctx: WebContext = Depends(get_ctx)) -> Response:
    def act(form: dict[str, str], scope: Scope, info: dict[str, Any]) -> None:
        mode = form.get("mta_sts_mode")
        patch = m.DomainPatch(enabled=form.get("enabled") == "yes", catchall=form.get("catchall") or None,
                              postmaster=form.get("postmaster") or None,
                              mta_sts_mode=mode if mode in ("testing", "enforce", "none") else None)
        apid.update_domain(info["name"], patch, scope, ctx)

    return _domain_action(request, posted, domain, ctx, act, "Settings saved.")


@router.post("/domains/{domain}/mailboxes")
def domain_add_mailbox(request: Request, posted: Posted, domain: str, ctx: WebContext = Depends(get_ctx)) -> Response:
    def act(form: dict[str, str], scope: Scope, info: dict[str, Any]) -> str:
        body = m.MailboxIn(address=f"{form.get('local_part', '')[:64]}@{info['name']}",
                           password=form.get("password") or None, quota=form.get("quota") or None)
        made = apid.create_mailbox(body, scope, ctx)
        return f"Mailbox {made['address']} created."

    return _domain_action(request, posted, domain, ctx, act, "")


@router.post("/domains/{domain}/aliases")
def domain_add_alias(request: Request, posted: Posted, domain: str, ctx: WebContext = Depends(get_ctx)) -> Response:
    def act(form: dict[str, str], scope: Scope, info: dict[str, Any]) -> str:
        targets = [t for t in form.get("targets", "").replace(",", " ").split() if t][:1000]
        body = m.AliasIn(source=f"{form.get('local_part', '')[:64]}@{info['name']}", targets=targets)
        made = apid.create_alias(body, scope, ctx)
        return f"Alias {made['source']} saved."

    return _domain_action(request, posted, domain, ctx, act, "")


@router.post("/domains/{domain}/mailboxes/{address}/delete")
def mailbox_delete(request: Request, posted: Posted, domain: str, address: str,
                   ctx: WebContext = Depends(get_ctx)) -> Response:
    def act(form: dict[str, str], scope: Scope, info: dict[str, Any]) -> str:
        apid.delete_mailbox(address, scope, ctx)
        return f"Mailbox {address} deleted."

    return _domain_action(request, posted, domain, ctx, act, "")


@router.post("/domains/{domain}/aliases/{source}/delete")
def alias_delete(request: Request, posted: Posted, domain: str, source: str,
                 ctx: WebContext = Depends(get_ctx)) -> Response:
    def act(form: dict[str, str], scope: Scope, info: dict[str, Any]) -> str:
        apid.delete_alias(source, scope, ctx)
        return f"Alias {source} deleted."

    return _domain_action(request, posted, domain, ctx, act, "")


@router.post("/domains/{domain}/delete")
def domain_delete(request: Request, posted: Posted, domain: str, ctx: WebContext = Depends(get_ctx)) -> Response:
    session = session_of(request)
    form = form_of(request, session, posted)
    scope = _scope(session)
    info = apid.get_domain(domain, scope, ctx)
    try:
        apid.delete_domain(info["name"], form.get("force") == "yes", scope, ctx)
    except Problem as exc:
        return domain_page(request, domain, ctx, error=_reason(exc), status=exc.status)
    return back(f"/tenants/{info['tenant']}", f"Domain {info['display_name']} deleted.")


# --- queue -------------------------------------------------------------------------------------

@router.get("/queue")
def queue_page(request: Request, state: str = "", q: str = "", ctx: WebContext = Depends(get_ctx)) -> Response:
    scope = _scope(session_of(request))
    scope.require_admin()
    state = state if state in ("incoming", "active", "deferred", "hold", "corrupt") else ""
    page = apiq.list_queue(state or None, q[:320] or None, PageParams(limit=500), scope, ctx)
    return render(request, "queue.html", entries=page["items"], more=page["next_cursor"] is not None,
                  state=state, q=q[:320], sizes=queue_sizes(ctx))


@router.post("/queue/flush")
def queue_flush(request: Request, posted: Posted, ctx: WebContext = Depends(get_ctx)) -> Response:
    session = session_of(request)
    form_of(request, session, posted)
    n = apiq.flush(_scope(session), ctx)["affected"]
    return back("/queue", f"{n} deferred message(s) scheduled for delivery now.")


@router.post("/queue/{qid}/{action}")
def queue_action(request: Request, posted: Posted, qid: str, action: str,
                 ctx: WebContext = Depends(get_ctx)) -> Response:
    session = session_of(request)
    form_of(request, session, posted)
    fn = {"hold": apiq.hold, "release": apiq.release, "delete": apiq.delete}.get(action)
    if fn is None:
        raise Problem(404, "Not Found", "no such action")
    fn(qid, _scope(session), ctx)
    past = {"hold": "put on hold", "release": "released", "delete": "deleted"}[action]
    return back("/queue" if action == "delete" else f"/queue/{qid}", f"{qid} {past}.")


@router.get("/queue/{qid}")
def queue_message(request: Request, qid: str, ctx: WebContext = Depends(get_ctx)) -> Response:
    scope = _scope(session_of(request))
    shown = apiq.show_queued(qid, scope, ctx)
    ours = [v for k, v in shown["headers"] if k.lower() == "authentication-results"]
    return render(request, "queue_message.html", m=shown, auth=badges(ours, ctx.cfg.hostname))


@router.get("/queue/{qid}/source")
def queue_source(request: Request, qid: str, ctx: WebContext = Depends(get_ctx)) -> Response:
    scope = _scope(session_of(request))
    scope.require_admin()
    raw = apiq._show(ctx, qid).message
    return Response(raw, media_type="text/plain; charset=utf-8",
                    headers={"Content-Security-Policy": "default-src 'none'; sandbox"})


@router.get("/queue/{qid}/body")
def queue_body(request: Request, qid: str, ctx: WebContext = Depends(get_ctx)) -> Response:
    """The message body for the sandboxed iframe: remote content, scripts and forms blocked by CSP."""
    scope = _scope(session_of(request))
    scope.require_admin()
    return render_body(apiq._show(ctx, qid).message)


# --- tokens ------------------------------------------------------------------------------------

@router.get("/tokens")
def tokens_route(request: Request, ctx: WebContext = Depends(get_ctx)) -> Response:
    return tokens_page(request, ctx)


def tokens_page(request: Request, ctx: WebContext, created: dict | None = None, error: str = "",
                status: int = 200) -> Response:
    scope = _scope(session_of(request))
    rows = auth.token_list(ctx.engine, None if scope.is_admin else scope.tenant_id)
    tenants = [t["name"] for t in ctx.directory.tenant_list() if scope.allows(t["name"])]
    return render(request, "tokens.html", status=status, tokens=rows, created=created, error=error,
                  tenant_names=tenants)


@router.post("/tokens")
def tokens_add(request: Request, posted: Posted, ctx: WebContext = Depends(get_ctx)) -> Response:
    from .api.tokens import create_token

    session = session_of(request)
    form = form_of(request, session, posted)
    scope = _scope(session)
    try:
        body = m.TokenIn(scope=form.get("scope", "tenant"), tenant=form.get("tenant") or None,
                         name=form.get("name", "")[:100])
        made = create_token(body, scope, ctx)
    except (Problem, ValueError) as exc:
        return tokens_page(request, ctx, error=_reason(exc), status=_status(exc))
    response = tokens_page(request, ctx, created=made, status=201)
    response.headers["Cache-Control"] = "no-store"
    return response


@router.post("/tokens/{token_id}/revoke")
def tokens_revoke(request: Request, posted: Posted, token_id: RowId, ctx: WebContext = Depends(get_ctx)) -> Response:
    from .api.tokens import revoke_token

    session = session_of(request)
    form_of(request, session, posted)
    try:
        revoke_token(token_id, _scope(session), ctx)
    except Problem as exc:
        if exc.status == 404:
            raise
    return back("/tokens", f"Token {token_id} revoked.")


