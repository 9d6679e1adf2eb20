"""Certificates in the web service: the HTTP-01 answers the CA fetches, and the admin page listing the store.

``/.well-known/acme-challenge/<token>`` is open (the CA has no credentials) and answers only what the
ACME client put in ``tls/acme/http-01/`` for an order under way (see :mod:`dovetail.certs.challenges`).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import PlainTextResponse

from ..certs.challenges import ChallengeFiles
from ..certs.store import CertStore, certificate_rows
from .context import WebContext, get_ctx
from .ui import render, session_of

router = APIRouter(include_in_schema=False)


def store_of(ctx: WebContext) -> CertStore:
    return CertStore(ctx.layout.tls)


@router.get("/.well-known/acme-challenge/{token}")
def acme_http01(token: str, ctx: WebContext = Depends(get_ctx)) -> Response:
    answer = ChallengeFiles(ctx.layout.tls / "acme").http01_get(token)
    if answer is None:
        return PlainTextResponse("no such challenge\n", status_code=404)
    return PlainTextResponse(answer)


@router.get("/certificates")
def certificates_page(request: Request, ctx: WebContext = Depends(get_ctx)) -> Response:
    session_of(request)["scope"].require_admin()
    return render(request, "certificates.html", certificates=certificate_rows(store_of(ctx)),
                  hostname=ctx.cfg.hostname)
