"""CLI verbs of the reports received: ``dovetail reports dmarc|tls|rejected [--domain D]``."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer

from .context import Context, emit_json, emit_table, fail

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
DomainOpt = Annotated[str | None, typer.Option("--domain", help="One domain (default: all).")]
FromOpt = Annotated[str | None, typer.Option("--from", help="First day, YYYY-MM-DD (UTC).")]
ToOpt = Annotated[str | None, typer.Option("--to", help="Last day, YYYY-MM-DD (UTC).")]

reports_app = typer.Typer(help="DMARC aggregate and TLS-RPT reports received at the rua addresses we publish.",
                          no_args_is_help=True)


def _date(value: str | None, what: str) -> dt.date | None:
    if not value:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        fail(f"{what} {value!r}: give a day as YYYY-MM-DD")


def _domains(c: Context, domain: str | None) -> list[str] | None:
    if domain is None:
        return None
    from ..directory import DirectoryError

    try:
        return [c.directory.domain_get(domain).name]
    except DirectoryError as exc:
        fail(str(exc))


@reports_app.command("dmarc")
def dmarc_cmd(ctx: typer.Context, domain: DomainOpt = None, since: FromOpt = None, until: ToOpt = None,
              as_json: JsonOpt = False) -> None:
    """DMARC aggregate reports: messages per day and source IP, DMARC pass/fail, disposition."""
    from ..reports.store import ReportStore

    c: Context = ctx.obj
    figures = ReportStore(c.engine).dmarc(_domains(c, domain), _date(since, "--from"), _date(until, "--to"))
    if as_json:
        emit_json(figures)
        return
    rows = [[r["day"], r["domain"], rep["org_name"], rec["source_ip"], rec["count"],
             "pass" if rec["dmarc_pass"] else "fail", rec["disposition"],
             f"{rec['dkim_result']}{'' if rec['dkim_aligned'] else ' (unaligned)'}",
             f"{rec['spf_result']}{'' if rec['spf_aligned'] else ' (unaligned)'}"]
            for rep in figures["reports"] for r in [rep] for rec in rep["records"]]
    emit_table(["day", "domain", "reporter", "source", "messages", "dmarc", "disposition", "dkim", "spf"], rows,
               title="DMARC aggregate reports")


@reports_app.command("tls")
def tls_cmd(ctx: typer.Context, domain: DomainOpt = None, since: FromOpt = None, until: ToOpt = None,
            as_json: JsonOpt = False) -> None:
    """TLS-RPT reports: successful and failed sessions per day, and the failures by result type."""
    from ..reports.store import ReportStore

    c: Context = ctx.obj
    figures = ReportStore(c.engine).tls(_domains(c, domain), _date(since, "--from"), _date(until, "--to"))
    if as_json:
        emit_json(figures)
        return
    rows = [[r["day"], r["domain"], r["org_name"], r["policy_type"], r["success"], r["failure"],
             ", ".join(f"{f['result_type']} {f['count']}" for f in r["failures"])] for r in figures["reports"]]
    emit_table(["day", "domain", "reporter", "policy", "successful", "failed", "failures"], rows,
               title="TLS reports")


@reports_app.command("rejected")
def rejected_cmd(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Messages to a report address that held no readable report (kept in mail/<tenant>/_reports/)."""
    from ..reports.store import ReportStore

    rows = ReportStore(ctx.obj.engine).rejects()
    if as_json:
        emit_json(rows)
        return
    emit_table(["received", "tenant", "recipient", "file", "reason"],
               [[r["received_at"], r["tenant"], r["recipient"], r["message_key"], r["reason"]] for r in rows])


def register(app: typer.Typer) -> None:
    app.add_typer(reports_app, name="reports")
