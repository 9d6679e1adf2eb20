"""The web service: one FastAPI application with the REST API under ``/api/v1`` and the admin UI.

``create_app(cfg)`` is all a server needs (``uvicorn.Server(uvicorn.Config(create_app(cfg), ...))``).
Cookies are marked ``Secure`` when the request came over TLS; on plain HTTP (the default listener
is loopback-only, ``127.0.0.1:8025``) they cannot be, so put a TLS proxy in front before binding
``listen.http`` to a public address.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Request, Response
from sqlalchemy.engine import Engine

from ..config import Config
from ..datadir import Layout
from ..directory import Directory
from ..httpapi import problems
from ..httpapi.deps import get_scope
from ..log import get_logger
from ..outbound.api import make_router
from ..outbound.send import SendService
from ..queue import Queue
from ..replies.api import router as replies_router
from ..replies.hooks import outbound_hooks
from . import (
    assets,
    certs_pages,
    counters,
    metrics,
    mtasts,
    outbound_pages,
    replies_pages,
    reports_pages,
    ui,
    unsubscribe,
)
from .api import directory as api_directory
from .api import outbound as api_outbound
from .api import queue as api_queue
from .api import reply_sources as api_reply_sources
from .api import reports as api_reports
from .api import stats as api_stats
from .api import tokens as api_tokens
from .auth import Auth
from .context import WebContext

log = get_logger("web")

API_PREFIX = "/api/v1"


def _send_router(ctx: WebContext) -> APIRouter:
    """``POST /api/v1/messages`` of the outbound package, queueing into this data directory."""
    registry, suppressions = outbound_hooks(ctx.engine, ctx.cfg)
    service = SendService(ctx.engine, Queue(ctx.layout.queue), registry=registry, suppressions=suppressions,
                          public_url=ctx.cfg.get("web.public_url") or None, events=registry)
    return make_router(service, get_scope)


def _api_router() -> APIRouter:
    router = APIRouter(prefix=API_PREFIX)
    router.include_router(api_directory.router)
    router.include_router(api_queue.router)
    router.include_router(api_tokens.router)
    router.include_router(api_stats.router)
    router.include_router(replies_router)
    router.include_router(api_outbound.router)
    router.include_router(api_reply_sources.router)
    router.include_router(api_reports.router)
    return router


def create_app(cfg: Config, engine: Engine | None = None, *, flush_interval: float = 5.0) -> FastAPI:
    """The web application for one data directory (``engine`` defaults to a migrated one for ``cfg``)."""
    if engine is None:
        from ..db import connect_and_migrate

        engine = connect_and_migrate(cfg)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):  # noqa: ANN202
        counters.start_flusher(engine, flush_interval)
        yield
        counters.stop_flusher()

    app = FastAPI(title="Dovetail", version="1", lifespan=lifespan,
                  description="REST API of Dovetail: directory, queue, tokens, mail-flow statistics, replies.",
                  openapi_url=f"{API_PREFIX}/openapi.json", docs_url=f"{API_PREFIX}/docs", redoc_url=None)
    ctx = WebContext(cfg=cfg, engine=engine, directory=Directory(engine), layout=Layout(cfg.data_dir))
    app.state.ctx = ctx
    app.state.engine = engine
    app.state.auth = Auth(engine)
    app.state.http_requests = defaultdict(int)
    app.state.one_click = unsubscribe.service_for(ctx)

    problems.install(app, html=ui.error_page)
    app.include_router(mtasts.router)  # first: chosen by Host, ahead of every page
    app.include_router(_api_router())
    app.include_router(_send_router(ctx))
    app.include_router(ui.router)
    app.include_router(replies_pages.router)
    app.include_router(outbound_pages.router)
    app.include_router(reports_pages.router)
    app.include_router(unsubscribe.router)
    app.include_router(assets.router)
    app.include_router(certs_pages.router)

    trusted = [ipaddress.ip_network(n) for n in cfg.get("auth.trusted_networks", [])]

    @app.get("/metrics", include_in_schema=False)
    def prometheus(request: Request) -> Response:
        """Open to trusted networks (the scraper's usual place); elsewhere an admin credential is needed."""
        client = request.client.host if request.client else ""
        try:
            local = any(ipaddress.ip_address(client) in n for n in trusted)
        except ValueError:
            local = False
        if not local:
            get_scope(request).require_admin()
        return Response(metrics.render(ctx, dict(app.state.http_requests)),
                        media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.middleware("http")
    async def _headers(request: Request, call_next):  # noqa: ANN001, ANN202
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        app.state.http_requests[(path, response.status_code)] += 1
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "frame-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
        return response

    return app
