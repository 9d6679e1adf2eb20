"""``/metrics`` in the Prometheus text exposition format (version 0.0.4), for every service.

The web process answers for all of them: the master's status file (``run/status.json``) gives each
service's workers, pids, restarts and throttling; each worker's stats file (``run/stats/``) its
connections; the database the queue and the mail-flow counters every process flushes.

Written by hand: the format is a few lines of text and the values come from our own files and
tables, so the ``prometheus_client`` dependency would add nothing but its registry.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..certs.store import CertStore
from ..outbound.shaping import DANE_OUTCOMES, OUTCOMES, merge, read_published
from ..status import read_json_dir
from . import counters
from .api.stats import queue_sizes
from .context import WebContext
from .integrations import master_status, service_health

_started = time.time()
MAX_STATS_FILES = 1000  # a worker writes one; more means something else is filling the directory
MAX_STATS_BYTES = 4096


def _line(metric: str, value: float, /, **labels: str) -> str:
    text = _value(value)
    if labels:
        inner = ",".join(f'{k}="{_esc(v)}"' for k, v in labels.items())
        return f"{metric}{{{inner}}} {text}"
    return f"{metric} {text}"


def _value(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def worker_stats(data_dir: Path) -> dict[tuple[str, int], dict[str, Any]]:
    """Each worker's last published counters, by (service, worker index); unreadable files are skipped."""
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for data in read_json_dir(data_dir / "run" / "stats", MAX_STATS_FILES, MAX_STATS_BYTES):
        service, index = data.get("service"), data.get("worker")
        if isinstance(service, str) and isinstance(index, int):
            out[(service, index)] = data
    return out


def _number(data: dict[str, Any], key: str) -> int:
    value = data.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


Family = Callable[[str, str, str], None]


def _master(out: list[str], family: Family, ctx: WebContext) -> None:
    status = master_status(ctx.cfg)
    family("dovetail_master_up", "gauge", "1 when a master process runs for this data directory.")
    out.append(_line("dovetail_master_up", 1 if status else 0))
    if not status:
        return
    services: dict[str, Any] = status.get("services") or {}
    family("dovetail_master_start_time_seconds", "gauge", "Start time of the master, Unix seconds.")
    out.append(_line("dovetail_master_start_time_seconds", float(status.get("started") or 0)))
    rows: dict[str, list[str]] = {name: [] for name in (
        "service_enabled", "service_throttled", "service_workers", "service_workers_configured",
        "service_restarts_total", "worker_up", "worker_pid", "worker_restarts_total", "worker_uptime_seconds",
        "worker_connections", "worker_connections_total")}
    stats = worker_stats(ctx.cfg.data_dir)
    for name, svc in sorted(services.items()):
        workers = svc.get("workers") or []
        rows["service_enabled"].append(_line("dovetail_service_enabled", bool(svc.get("enabled")), service=name))
        rows["service_throttled"].append(_line("dovetail_service_throttled", bool(svc.get("throttled")),
                                               service=name))
        rows["service_workers"].append(_line("dovetail_service_workers", sum(1 for w in workers if w.get("pid")),
                                             service=name))
        rows["service_workers_configured"].append(
            _line("dovetail_service_workers_configured", len(workers), service=name))
        rows["service_restarts_total"].append(
            _line("dovetail_service_restarts_total", sum(int(w.get("restarts") or 0) for w in workers),
                  service=name))
        for w in workers:
            index = int(w.get("index", 0))
            labels = {"service": name, "worker": str(index)}
            pid = int(w.get("pid") or 0)
            rows["worker_up"].append(_line("dovetail_worker_up", pid > 0, **labels))
            rows["worker_pid"].append(_line("dovetail_worker_pid", pid, **labels))
            rows["worker_restarts_total"].append(_line("dovetail_worker_restarts_total",
                                                       int(w.get("restarts") or 0), **labels))
            if pid:
                rows["worker_uptime_seconds"].append(_line("dovetail_worker_uptime_seconds",
                                                           float(w.get("uptime") or 0), **labels))
            published = stats.get((name, index))
            if pid and published and published.get("pid") == pid:  # a dead worker's file is not its successor's
                rows["worker_connections"].append(_line("dovetail_worker_connections",
                                                        _number(published, "connections"), **labels))
                rows["worker_connections_total"].append(_line("dovetail_worker_connections_total",
                                                              _number(published, "connections_total"), **labels))
    helps = {
        "service_enabled": ("gauge", "1 when the service is enabled in the service table."),
        "service_throttled": ("gauge", "1 while the master holds back restarts of a crashing service."),
        "service_workers": ("gauge", "Worker processes of the service that are running."),
        "service_workers_configured": ("gauge", "Worker processes the service table asks for."),
        "service_restarts_total": ("counter", "Worker restarts of the service since the master started."),
        "worker_up": ("gauge", "1 when the worker process runs."),
        "worker_pid": ("gauge", "Process id of the worker (0 when not running)."),
        "worker_restarts_total": ("counter", "Restarts of this worker slot since the master started."),
        "worker_uptime_seconds": ("gauge", "Seconds since the worker process started."),
        "worker_connections": ("gauge", "Connections the worker is serving now."),
        "worker_connections_total": ("counter", "Connections the worker process accepted since it started."),
    }
    for key, lines in rows.items():
        kind, help_text = helps[key]
        family(f"dovetail_{key}", kind, help_text)
        out.extend(lines)


def _screening(out: list[str], family: Family, ctx: WebContext) -> None:
    """The MX's screening decisions and stress mode, as each smtpd worker publishes them (``run/stats/``);
    counters since each worker started."""
    decisions: dict[str, int] = {}
    stress: list[str] = []
    evicted = 0
    for (service, index), data in sorted(worker_stats(ctx.cfg.data_dir).items()):
        if service != "smtpd":
            continue
        screen = data.get("screen")
        if isinstance(screen, dict):
            for name, n in screen.items():
                if isinstance(name, str) and isinstance(n, int):
                    decisions[name] = decisions.get(name, 0) + n
        stress.append(_line("dovetail_smtpd_stress", bool(data.get("stressed")), worker=str(index)))
        evicted += _number(data, "evicted")
    family("dovetail_screen_decisions_total", "counter",
           "Decisions of the MX's screening stage by reason (pass_new, pass_old, allowlisted, denylisted, "
           "pregreet, dnsbl, hangup).")
    for name, n in sorted(decisions.items()):
        out.append(_line("dovetail_screen_decisions_total", n, decision=name))
    family("dovetail_smtpd_stress", "gauge", "1 while the MX worker is in stress mode.")
    out.extend(stress)
    family("dovetail_smtpd_stress_evictions_total", "counter",
           "Idle MX connections closed under stress to make room for new ones.")
    out.append(_line("dovetail_smtpd_stress_evictions_total", evicted))


def _destinations(out: list[str], family: Family, ctx: WebContext) -> None:
    """Outbound shaping per destination, as the queue-manager processes publish it (``run/outbound/``):
    the busiest destinations by name, the rest as ``other``, so the series stay few."""
    merged = merge(read_published(ctx.cfg.data_dir / "run" / "outbound"))
    family("dovetail_outbound_destination_recipients_total", "counter",
           "Recipients delivered, deferred or bounced per destination since the queue managers started.")
    for dest, row in merged["counts"].items():
        for outcome in OUTCOMES:
            out.append(_line("dovetail_outbound_destination_recipients_total", row[outcome], destination=dest,
                             outcome=outcome))
    family("dovetail_outbound_destinations_paused", "gauge",
           "Destinations paused now after answering 421 or 4.7.x.")
    out.append(_line("dovetail_outbound_destinations_paused", len(merged["paused"])))
    family("dovetail_outbound_destination_pause_seconds", "gauge", "Seconds left of a destination's pause.")
    for dest, left in merged["paused"].items():
        out.append(_line("dovetail_outbound_destination_pause_seconds", float(left), destination=dest))
    family("dovetail_outbound_destination_sessions", "gauge", "SMTP sessions in flight per destination.")
    for dest, n in merged["sessions"].items():
        out.append(_line("dovetail_outbound_destination_sessions", int(n), destination=dest))
    family("dovetail_outbound_dane_total", "counter",
           "MX connection attempts by DANE outcome (verified, failed, none) since the queue managers started.")
    for outcome in DANE_OUTCOMES:
        out.append(_line("dovetail_outbound_dane_total", merged["dane"][outcome], outcome=outcome))


def _certificates(out: list[str], family: Callable[[str, str, str], None], ctx: WebContext) -> None:
    family("dovetail_cert_days_to_expiry", "gauge", "Days until each stored certificate expires, per name.")
    for info in CertStore(ctx.layout.tls).list():
        days = round(info.days_left(), 3)
        for name in info.names:
            out.append(_line("dovetail_cert_days_to_expiry", days, name=name))


def render(ctx: WebContext, http_requests: dict[tuple[str, int], int]) -> str:
    out: list[str] = []

    def family(name: str, kind: str, help_text: str) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")

    _master(out, family, ctx)
    family("dovetail_mail_total", "counter", "Mail events of all services (smtpd, qmgr) stored in the database.")
    for name, n in counters.all_time(ctx.engine).items():
        out.append(_line("dovetail_mail_total", n, counter=name))
    family("dovetail_auth_results_total", "counter",
           "Sender-authentication verdicts of the MX (dmarc quarantine/reject: dispositions applied; "
           "dmarc override: a fail not enforced because a trusted ARC sealer saw a pass).")
    for name, n in counters.auth_totals(ctx.engine).items():
        method, _, result = name.partition("_")
        out.append(_line("dovetail_auth_results_total", n, method=method, result=result))
    family("dovetail_mx_policy_decisions_total", "counter",
           "MX rate-limit refusals (decision=ratelimit) and greylist verdicts (decision=greylist) by reason.")
    for name, n in counters.auth_totals(ctx.engine, counters.POLICY_COUNTERS).items():
        decision, _, reason = name.partition("_")
        out.append(_line("dovetail_mx_policy_decisions_total", n, decision=decision, reason=reason))
    family("dovetail_mail_events_total", "counter", "Mail events recorded by the web process since it started.")
    for name, n in counters.totals().items():
        out.append(_line("dovetail_mail_events_total", n, event=name))
    family("dovetail_mail_events_24h", "gauge", "Mail events of all processes in the last 24 hours.")
    for name, n in counters.since(ctx.engine, 86400).items():
        out.append(_line("dovetail_mail_events_24h", n, event=name))
    family("dovetail_queue_messages", "gauge", "Messages in the queue by state.")
    for state, n in queue_sizes(ctx).items():
        out.append(_line("dovetail_queue_messages", n, state=state))
    _destinations(out, family, ctx)
    _screening(out, family, ctx)
    family("dovetail_directory_objects", "gauge", "Objects in the directory.")
    counts = ctx.directory.counts()
    for kind, key in (("tenant", "tenants"), ("domain", "domains"), ("mailbox", "mailboxes"), ("alias", "aliases")):
        out.append(_line("dovetail_directory_objects", counts[key], kind=kind))
    family("dovetail_service_up", "gauge", "1 when the service runs (master) or its listener accepts connections.")
    for svc in service_health(ctx.cfg):
        if svc["status"] != "disabled":
            out.append(_line("dovetail_service_up", 1 if svc["status"] == "up" else 0, service=svc["service"]))
    family("dovetail_http_requests_total", "counter", "HTTP requests served by the web service.")
    for (route, status), n in sorted(http_requests.items()):
        out.append(_line("dovetail_http_requests_total", n, route=route, code=str(status)))
    _certificates(out, family, ctx)
    family("dovetail_web_start_time_seconds", "gauge", "Start time of the web service, Unix seconds.")
    out.append(_line("dovetail_web_start_time_seconds", _started))
    return "\n".join(out) + "\n"
