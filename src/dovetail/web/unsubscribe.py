"""The one-click unsubscribe endpoint of the web listener (RFC 8058): ``/unsubscribe/<token>``.

``POST`` with ``List-Unsubscribe=One-Click`` (form-encoded or multipart, as mail providers send it)
unsubscribes at once: no login, no cookie and no CSRF token, because RFC 8058 has the mail client post
without any context, and the token is the credential (HMAC-bound to tenant, message and recipient, see
``dovetail.replies.oneclick``). Only this path takes a POST without a session: it never reads one, so the
admin's CSRF check (``web.auth``) is not involved. ``GET`` only shows a confirmation page whose button
makes that same POST, since mail scanners and link previews follow links. The answer is never a
redirect (RFC 8058 §3.2), and a repeated POST answers as the first did.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from ..httpapi.deps import Posted
from ..httpapi.problems import MEDIA_TYPE as PROBLEM_MEDIA_TYPE
from ..outbound.unsubscribe import PATH
from ..replies import tokens
from ..replies.oneclick import OneClick, Target, UnsubscribeRefused
from . import ui
from .context import WebContext

router = APIRouter(include_in_schema=False)

ONE_CLICK = ("List-Unsubscribe", "One-Click")
_HEADERS = {"Cache-Control": "no-store", "X-Robots-Tag": "noindex, nofollow"}


def service_for(ctx: WebContext) -> OneClick:
    """The one-click service of this data directory (``web.unsubscribe_link_lifetime`` in whole days)."""
    lifetime = int(float(ctx.cfg.get("web.unsubscribe_link_lifetime", 365 * 86400)) // 86400)
    return OneClick(ctx.engine, tokens.load_secret(ctx.cfg.data_dir, ctx.engine), lifetime_days=lifetime)


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "text/html")


def _page(request: Request, status: int = 200, **values: Any) -> Response:
    context = {"session": None, "notice": "", "error": "", "problem": "", "replies": False, "target": None,
               "done": False, **values}
    response = ui.templates.TemplateResponse(request, "unsubscribe.html", context, status_code=status)
    response.headers.update(_HEADERS)
    return response


def _refused(request: Request, status: int, detail: str, *, html: bool) -> Response:
    if html:
        title = "Link expired" if status == 410 else "Link not valid" if status == 404 else "Not understood"
        return _page(request, status, problem=detail, title=title)
    body = {"type": "about:blank", "title": {404: "Not Found", 410: "Gone"}.get(
        status, "Bad Request"), "status": status, "detail": detail, "instance": request.url.path}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=_HEADERS)


def _service(request: Request) -> OneClick:
    return request.app.state.one_click


@router.get(PATH + "/{token}")
def confirm(request: Request, token: str) -> Response:
    """The confirmation page: who would be unsubscribed, and a button that POSTs. Changes nothing."""
    try:
        target: Target = _service(request).resolve(token)
    except UnsubscribeRefused as exc:
        return _refused(request, exc.status, exc.detail, html=True)
    return _page(request, target=target, title="Unsubscribe")


@router.post(PATH + "/{token}")
def one_click(request: Request, token: str, posted: Posted) -> Response:
    """RFC 8058 one-click: the body must be ``List-Unsubscribe=One-Click``."""
    html = _wants_html(request)
    if posted.get(ONE_CLICK[0]) != ONE_CLICK[1]:
        return _refused(request, 400, "the body must be List-Unsubscribe=One-Click (RFC 8058)", html=html)
    try:
        outcome = _service(request).unsubscribe(token)
    except UnsubscribeRefused as exc:
        return _refused(request, exc.status, exc.detail, html=html)
    if html:
        return _page(request, target=outcome.target, done=True, title="Unsubscribed")
    return JSONResponse({"unsubscribed": True}, headers=_HEADERS)
