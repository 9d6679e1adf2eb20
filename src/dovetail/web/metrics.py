"""``/metrics`` in the Prometheus text exposition format (version 0.0.4).

Written by hand: the format is a few lines of text and the values come from our own counters,
so the ``prometheus_client`` dependency would add nothing but its registry.
"""

from __future__ import annotations

import time

from . import counters
from .api.stats import queue_sizes
from .context import WebContext
from .integrations import service_health

_started = time.time()


def _line(name: str, value: float, **labels: str) -> str:
    if labels:
        inner = ",".join(f'{k}="{_esc(v)}"' for k, v in labels.items())
        return f"{name}{{{inner}}} {value:g}"
    return f"{name} {value:g}"


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render(ctx: WebContext, http_requests: dict[tuple[str, int], int]) -> str:
    out: list[str] = []

    def family(name: str, kind: str, help_text: str) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")

    family("dovetail_mail_events_total", "counter", "Mail events recorded by this process since it started.")
    for name, n in counters.totals().items():
        out.append(_line("dovetail_mail_events_total", n, event=name))
    family("dovetail_mail_events_24h", "gauge", "Mail events of all processes in the last 24 hours.")
    for name, n in counters.since(ctx.engine, 86400).items():
        out.append(_line("dovetail_mail_events_24h", n, event=name))
    family("dovetail_queue_messages", "gauge", "Messages in the queue by state.")
    for state, n in queue_sizes(ctx).items():
        out.append(_line("dovetail_queue_messages", n, state=state))
    family("dovetail_directory_objects", "gauge", "Objects in the directory.")
    d = ctx.directory
    out.append(_line("dovetail_directory_objects", len(d.tenant_list()), kind="tenant"))
    out.append(_line("dovetail_directory_objects", len(d.domain_list()), kind="domain"))
    out.append(_line("dovetail_directory_objects", len(d.mailbox_list()), kind="mailbox"))
    out.append(_line("dovetail_directory_objects", len(d.alias_list()), kind="alias"))
    family("dovetail_service_up", "gauge", "1 when the service's listener accepts connections.")
    for svc in service_health(ctx.cfg):
        if svc["status"] != "disabled":
            out.append(_line("dovetail_service_up", 1 if svc["status"] == "up" else 0, service=svc["service"]))
    family("dovetail_http_requests_total", "counter", "HTTP requests served by the web service.")
    for (route, status), n in sorted(http_requests.items()):
        out.append(_line("dovetail_http_requests_total", n, route=route, code=str(status)))
    family("dovetail_web_start_time_seconds", "gauge", "Start time of the web service, Unix seconds.")
    out.append(_line("dovetail_web_start_time_seconds", _started))
    return "\n".join(out) + "\n"
