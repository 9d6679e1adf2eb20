"""Reports kept per domain and day: saving what the intake read, and the figures the API and pages show.

A report is saved once: the reporter's (org_name, report_id) for the domain is unique, so the same
report mailed twice (reporters retry, or send to two ``rua`` addresses) is counted once.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from ..dbrows import inserted_id
from .dmarc import DmarcReport
from .schema import dmarc_report_rows, dmarc_reports, report_rejects, tls_report_failures, tls_reports
from .tlsrpt import TlsPolicy, TlsReport


def _day(moment: dt.datetime) -> dt.date:
    return moment.date()


def _merge(policies: Iterable[TlsPolicy]) -> list[TlsPolicy]:
    """One entry per (domain, policy type): a report may list one policy per MX of a domain."""
    merged: dict[tuple[str, str], TlsPolicy] = {}
    for p in policies:
        key = (p.domain, p.policy_type)
        if key in merged:
            m = merged[key]
            merged[key] = TlsPolicy(p.policy_type, p.domain, m.success + p.success, m.failure + p.failure,
                                    m.failures + p.failures)
        else:
            merged[key] = p
    return list(merged.values())


class ReportStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # --- writing ---------------------------------------------------------------------------------

    def save_dmarc(self, report: DmarcReport) -> bool:
        """Store ``report``; False when this reporter's report id for the domain is there already."""
        try:
            with self.engine.begin() as conn:
                rid = inserted_id(conn.execute(dmarc_reports.insert().values(
                    domain=report.domain, day=_day(report.begin), org_name=report.org_name,
                    report_id=report.report_id, begin_at=report.begin, end_at=report.end,
                    policy=report.policy)))
                if report.rows:
                    conn.execute(dmarc_report_rows.insert(), [
                        {"report_id": rid, "source_ip": r.source_ip, "count": r.count, "disposition": r.disposition,
                         "header_from": r.header_from, "dkim_aligned": r.dkim_aligned, "spf_aligned": r.spf_aligned,
                         "dkim_result": r.dkim_result, "spf_result": r.spf_result} for r in report.rows])
        except IntegrityError:
            return False
        return True

    def save_tls(self, report: TlsReport, policies: list[TlsPolicy]) -> int:
        """Store the ``policies`` of ``report`` (those about domains it may report on); how many were new."""
        saved = 0
        for p in _merge(policies):
            try:
                with self.engine.begin() as conn:
                    rid = inserted_id(conn.execute(tls_reports.insert().values(
                        domain=p.domain, day=_day(report.begin), org_name=report.org_name,
                        report_id=report.report_id, begin_at=report.begin, end_at=report.end,
                        policy_type=p.policy_type, success_count=p.success,
                        failure_count=p.failure)))
                    if p.failures:
                        conn.execute(tls_report_failures.insert(), [
                            {"report_id": rid, "result_type": f.result_type, "sending_mta_ip": f.sending_mta_ip,
                             "receiving_mx_hostname": f.receiving_mx_hostname, "count": f.count}
                            for f in p.failures])
                saved += 1
            except IntegrityError:
                continue
        return saved

    def reject(self, tenant: str, recipient: str, message_key: str, reason: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(report_rejects.insert().values(tenant=tenant[:64], recipient=recipient[:320],
                                                        message_key=message_key[:255], reason=reason[:500]))

    def rejects(self, tenants: list[str] | None = None) -> list[dict[str, Any]]:
        query = sa.select(report_rejects).order_by(report_rejects.c.id)
        if tenants is not None:
            query = query.where(report_rejects.c.tenant.in_(tenants))
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    # --- reading ---------------------------------------------------------------------------------

    @staticmethod
    def _where(table: sa.Table, domains: list[str] | None, since: dt.date | None,
               until: dt.date | None) -> list[sa.ColumnElement[bool]]:
        cond: list[sa.ColumnElement[bool]] = []
        if domains is not None:
            cond.append(table.c.domain.in_(domains))
        if since is not None:
            cond.append(table.c.day >= since)
        if until is not None:
            cond.append(table.c.day <= until)
        return cond

    def dmarc(self, domains: list[str] | None = None, since: dt.date | None = None,
              until: dt.date | None = None) -> dict[str, Any]:
        """Per day pass/fail counts, per source IP figures and the records, for ``domains`` (None: all)."""
        query = (sa.select(dmarc_reports.c.domain, dmarc_reports.c.day, dmarc_reports.c.org_name,
                           dmarc_reports.c.report_id, dmarc_reports.c.begin_at, dmarc_reports.c.end_at,
                           dmarc_reports.c.policy, dmarc_report_rows.c.source_ip, dmarc_report_rows.c.count,
                           dmarc_report_rows.c.disposition, dmarc_report_rows.c.header_from,
                           dmarc_report_rows.c.dkim_aligned, dmarc_report_rows.c.spf_aligned,
                           dmarc_report_rows.c.dkim_result, dmarc_report_rows.c.spf_result)
                 .select_from(dmarc_reports.outerjoin(dmarc_report_rows))
                 .where(*self._where(dmarc_reports, domains, since, until))
                 .order_by(dmarc_reports.c.day, dmarc_reports.c.id, dmarc_report_rows.c.id))
        with self.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(query)]
        days: dict[tuple[str, str], dict[str, Any]] = {}
        sources: dict[str, dict[str, Any]] = {}
        reports: dict[tuple[str, str, str], dict[str, Any]] = {}
        for r in rows:
            day = r["day"].isoformat()
            key = (r["domain"], r["org_name"], r["report_id"])
            rep = reports.setdefault(key, {"domain": r["domain"], "day": day, "org_name": r["org_name"],
                                           "report_id": r["report_id"], "begin": r["begin_at"].isoformat(),
                                           "end": r["end_at"].isoformat(), "policy": r["policy"], "records": []})
            d = days.setdefault((day, r["domain"]), {"day": day, "domain": r["domain"], "reports": 0, "messages": 0,
                                                     "passed": 0, "fail": 0})
            if r["source_ip"] is None:
                continue
            passed = bool(r["dkim_aligned"]) or bool(r["spf_aligned"])
            record = {k: r[k] for k in ("source_ip", "count", "disposition", "header_from", "dkim_result",
                                        "spf_result")}
            record.update(dkim_aligned=bool(r["dkim_aligned"]), spf_aligned=bool(r["spf_aligned"]), dmarc_pass=passed)
            rep["records"].append(record)
            d["messages"] += r["count"]
            d["passed" if passed else "fail"] += r["count"]
            s = sources.setdefault(r["source_ip"], {"source_ip": r["source_ip"], "messages": 0, "passed": 0, "fail": 0,
                                                    "dispositions": defaultdict(int), "reporters": set()})
            s["messages"] += r["count"]
            s["passed" if passed else "fail"] += r["count"]
            s["dispositions"][r["disposition"]] += r["count"]
            s["reporters"].add(r["org_name"])
        for rep in reports.values():
            days[(rep["day"], rep["domain"])]["reports"] += 1
        source_list = [{**s, "dispositions": dict(s["dispositions"]), "reporters": sorted(s["reporters"])}
                       for s in sorted(sources.values(), key=lambda s: (-s["messages"], s["source_ip"]))]
        return {"days": list(days.values()), "sources": source_list, "reports": list(reports.values())}

    def tls(self, domains: list[str] | None = None, since: dt.date | None = None,
            until: dt.date | None = None) -> dict[str, Any]:
        """Per day successful/failed sessions, failures by result type and the reports, for ``domains``."""
        query = (sa.select(tls_reports).where(*self._where(tls_reports, domains, since, until))
                 .order_by(tls_reports.c.day, tls_reports.c.id))
        with self.engine.connect() as conn:
            reps = [dict(r._mapping) for r in conn.execute(query)]
            ids = [r["id"] for r in reps]
            fails: dict[int, list[dict[str, Any]]] = defaultdict(list)
            if ids:
                for fr in conn.execute(sa.select(tls_report_failures).where(tls_report_failures.c.report_id.in_(ids))
                                      .order_by(tls_report_failures.c.id)):
                    fails[fr.report_id].append({"result_type": fr.result_type, "sending_mta_ip": fr.sending_mta_ip,
                                                "receiving_mx_hostname": fr.receiving_mx_hostname, "count": fr.count})
        days: dict[tuple[str, str], dict[str, Any]] = {}
        by_type: dict[str, int] = defaultdict(int)
        reports = []
        for r in reps:
            day = r["day"].isoformat()
            d = days.setdefault((day, r["domain"]), {"day": day, "domain": r["domain"], "reports": 0, "success": 0,
                                                     "failure": 0})
            d["reports"] += 1
            d["success"] += r["success_count"]
            d["failure"] += r["failure_count"]
            for f in fails[r["id"]]:
                by_type[f["result_type"]] += f["count"]
            reports.append({"domain": r["domain"], "day": day, "org_name": r["org_name"], "report_id": r["report_id"],
                            "begin": r["begin_at"].isoformat(), "end": r["end_at"].isoformat(),
                            "policy_type": r["policy_type"], "success": r["success_count"],
                            "failure": r["failure_count"], "failures": fails[r["id"]]})
        failures = [{"result_type": t, "count": n} for t, n in sorted(by_type.items(), key=lambda kv: (-kv[1], kv[0]))]
        return {"days": list(days.values()), "failures": failures, "reports": reports}
