"""The reports page of a domain: DMARC pass/fail and TLS sessions per day, the sending sources, TLS
failures by type. The figures are the REST API's (:mod:`dovetail.web.api.reports`), so the tenant wall
is the API's too."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response

from .api import directory as apid
from .api.reports import dmarc_figures, tls_figures
from .chart import flow_svg
from .context import WebContext, get_ctx
from .ui import render, session_of

router = APIRouter(include_in_schema=False)

MAX_DAYS = 366


def _per_day(days: list[dict[str, Any]], keys: tuple[str, ...]) -> tuple[dict[str, list[int]], str, str]:
    """Series per key over every day from the first to the last reported (days without reports are 0)."""
    if not days:
        return {k: [] for k in keys}, "", ""
    by_day: dict[str, dict[str, int]] = {}
    for d in days:
        slot = by_day.setdefault(d["day"], dict.fromkeys(keys, 0))
        for k in keys:
            slot[k] += d[k]
    first, last = dt.date.fromisoformat(min(by_day)), dt.date.fromisoformat(max(by_day))
    first = max(first, last - dt.timedelta(days=MAX_DAYS - 1))
    span = [(first + dt.timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]
    zero = dict.fromkeys(keys, 0)
    return {k: [by_day.get(day, zero)[k] for day in span] for k in keys}, span[0], span[-1]


@router.get("/domains/{domain}/reports")
def domain_reports(request: Request, domain: str, since: dt.date | None = Query(None, alias="from"),
                   until: dt.date | None = Query(None, alias="to"), ctx: WebContext = Depends(get_ctx)) -> Response:
    scope = session_of(request)["scope"]
    info = apid.get_domain(domain, scope, ctx)
    dmarc = dmarc_figures(ctx, scope, info["name"], since, until)
    tls = tls_figures(ctx, scope, info["name"], since, until)
    dmarc_series, d_first, d_last = _per_day(dmarc["days"], ("passed", "fail"))
    tls_series, t_first, t_last = _per_day(tls["days"], ("success", "failure"))
    charts = {}
    if d_first:
        charts["dmarc"] = flow_svg(dmarc_series, title="DMARC results per day (messages)", start_label=d_first,
                                   end_label=d_last, chart_id="dmarc", dots=True)
    if t_first:
        charts["tls"] = flow_svg(tls_series, title="TLS sessions per day", start_label=t_first, end_label=t_last,
                                 chart_id="tls", dots=True)
    return render(request, "reports.html", domain=info, dmarc=dmarc, tls=tls, charts=charts,
                  since=since.isoformat() if since else "", until=until.isoformat() if until else "")
