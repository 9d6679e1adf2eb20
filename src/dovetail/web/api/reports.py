"""DMARC aggregate and TLS-RPT reports over the REST API, per domain and day.

Behind the tenant wall like every route: a tenant sees the reports of its own domains only, a domain
it cannot see is a 404, and without ``domain`` the figures cover all of the caller's domains.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from ...httpapi.deps import Scope, get_scope
from ...httpapi.problems import Problem
from ...reports.store import ReportStore
from ..context import WebContext, get_ctx
from .directory import visible_domain

router = APIRouter(tags=["reports"])


class DmarcDay(BaseModel):
    day: str
    domain: str
    reports: int
    messages: int
    passed: int  # DMARC pass: DKIM or SPF passed and aligned
    fail: int


class DmarcRecord(BaseModel):
    source_ip: str
    count: int
    disposition: str
    header_from: str
    dkim_aligned: bool
    spf_aligned: bool
    dkim_result: str
    spf_result: str
    dmarc_pass: bool


class DmarcSource(BaseModel):
    source_ip: str
    messages: int
    passed: int
    fail: int
    dispositions: dict[str, int]
    reporters: list[str]


class DmarcReportOut(BaseModel):
    domain: str
    day: str
    org_name: str
    report_id: str
    begin: str
    end: str
    policy: str
    records: list[DmarcRecord]


class DmarcReports(BaseModel):
    days: list[DmarcDay]
    sources: list[DmarcSource]
    reports: list[DmarcReportOut]


class TlsDay(BaseModel):
    day: str
    domain: str
    reports: int
    success: int
    failure: int


class TlsFailure(BaseModel):
    result_type: str
    count: int


class TlsFailureDetail(TlsFailure):
    sending_mta_ip: str
    receiving_mx_hostname: str


class TlsReportOut(BaseModel):
    domain: str
    day: str
    org_name: str
    report_id: str
    begin: str
    end: str
    policy_type: str
    success: int
    failure: int
    failures: list[TlsFailureDetail]


class TlsReports(BaseModel):
    days: list[TlsDay]
    failures: list[TlsFailure]
    reports: list[TlsReportOut]


DomainQ = Query(None, max_length=253, description="one domain (default: all the caller may see)")
FromQ = Query(None, alias="from", description="first day, YYYY-MM-DD (UTC)")
ToQ = Query(None, alias="to", description="last day, YYYY-MM-DD (UTC)")


def visible_domains(ctx: WebContext, scope: Scope, domain: str | None) -> list[str] | None:
    """The domains whose reports the caller asks for and may read (None: every domain, for an admin)."""
    if domain:
        return [visible_domain(ctx, scope, domain).name]
    if scope.is_admin:
        return None
    return [d.name for d in ctx.directory.domain_list(scope.tenant_filter())]


def _range(since: dt.date | None, until: dt.date | None) -> None:
    if since and until and since > until:
        raise Problem(422, "Unprocessable Content", "from is after to")


def dmarc_figures(ctx: WebContext, scope: Scope, domain: str | None, since: dt.date | None = None,
                  until: dt.date | None = None) -> dict[str, Any]:
    _range(since, until)
    return ReportStore(ctx.engine).dmarc(visible_domains(ctx, scope, domain), since, until)


def tls_figures(ctx: WebContext, scope: Scope, domain: str | None, since: dt.date | None = None,
                until: dt.date | None = None) -> dict[str, Any]:
    _range(since, until)
    return ReportStore(ctx.engine).tls(visible_domains(ctx, scope, domain), since, until)


@router.get("/reports/dmarc", response_model=DmarcReports)
def dmarc_reports(domain: str | None = DomainQ, since: dt.date | None = FromQ, until: dt.date | None = ToQ,
                  scope: Scope = Depends(get_scope), ctx: WebContext = Depends(get_ctx)) -> dict[str, Any]:
    """DMARC aggregate reports received: pass/fail per day, figures per source IP, and each report's records."""
    return dmarc_figures(ctx, scope, domain, since, until)


@router.get("/reports/tls", response_model=TlsReports)
def tls_reports(domain: str | None = DomainQ, since: dt.date | None = FromQ, until: dt.date | None = ToQ,
                scope: Scope = Depends(get_scope), ctx: WebContext = Depends(get_ctx)) -> dict[str, Any]:
    """TLS-RPT reports received: successful and failed sessions per day, failures by result type."""
    return tls_figures(ctx, scope, domain, since, until)
