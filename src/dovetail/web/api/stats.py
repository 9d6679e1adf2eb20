"""Mail-flow statistics: per-minute counters and queue sizes (what the dashboard draws)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query

from ...httpapi.deps import Scope, get_admin_scope
from .. import counters
from ..context import WebContext, get_ctx
from . import models as m

router = APIRouter(tags=["stats"])


def queue_sizes(ctx: WebContext) -> dict[str, int]:
    from ...datadir import QUEUE_STATES

    out = {}
    for state in QUEUE_STATES:
        try:
            out[state] = sum(1 for p in (ctx.layout.queue / state).iterdir() if not p.name.startswith("."))
        except FileNotFoundError:
            out[state] = 0
    return out


@router.get("/stats", response_model=m.Stats)
def stats(minutes: int = Query(60, ge=1, le=1440), scope: Scope = Depends(get_admin_scope),
          ctx: WebContext = Depends(get_ctx)) -> dict[str, Any]:
    """Mail flow is counted for the whole server, so only admin callers may read it."""
    counters.flush(ctx.engine)
    return {"minutes": minutes, "series": counters.series(ctx.engine, minutes),
            "last_24h": counters.since(ctx.engine, 86400),
            "queue": queue_sizes(ctx)}
