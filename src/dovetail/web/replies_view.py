"""The replies engine's tables as the admin UI reads them: whether they exist, today's replies by kind.

The pages over them are in :mod:`dovetail.web.replies_pages`; this module needs nothing of the UI,
so the UI's dashboard and menu can use it.
"""

from __future__ import annotations

import datetime as dt
from types import ModuleType

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ..httpapi.deps import Scope
from ..httpapi.problems import Problem
from ..replies import schema
from .context import WebContext

_available: dict[int, bool] = {}
KINDS = ("human", "auto_reply", "bounce", "unsubscribe", "complaint", "challenge")


def available(engine: Engine) -> bool:
    """True when the database has the replies engine's tables (checked once per engine)."""
    key = id(engine)
    if key not in _available:
        try:
            ok = sa.inspect(engine).has_table("replies")
        except Exception:  # noqa: BLE001
            ok = False
        _available[key] = ok
    return _available[key]


def replies_schema(ctx: WebContext) -> ModuleType:
    """The replies engine's tables (``dovetail.replies.schema``); 404 when the database lacks them."""
    if not available(ctx.engine):
        raise Problem(404, "Not Found", "the replies engine's tables are missing (run `dovetail init`)")
    return schema


def replies_today(engine: Engine, scope: Scope) -> dict[str, int] | None:
    """Replies received since midnight (UTC) by kind, or None when there is no replies engine."""
    if not available(engine):
        return None
    s = schema
    midnight = dt.datetime.now(dt.UTC).replace(tzinfo=None, hour=0, minute=0, second=0, microsecond=0)
    query = (sa.select(s.replies.c.kind, sa.func.count()).where(s.replies.c.received_at >= midnight)
             .where(scope.where(s.replies.c.tenant_id)).group_by(s.replies.c.kind))
    out = dict.fromkeys(KINDS, 0)
    with engine.connect() as conn:
        for kind, n in conn.execute(query):
            out[kind] = int(n)
    return out
