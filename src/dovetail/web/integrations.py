"""Optional parts the web admin shows when they are present: DNS records, replies, service health.

Each is looked up at call time so the admin works (and says "not configured") before the
outbound or replies packages exist, and picks them up without changes once they do.
"""

from __future__ import annotations

import importlib
import socket
from typing import Any

from ..config import Config, split_hostport

LISTENERS = {
    "smtpd": "listen.smtp",
    "submission": "listen.submission",
    "submissions": "listen.submissions",
    "imapd": "listen.imap",
    "imaps": "listen.imaps",
    "web": "listen.http",
}


def _optional(module: str, attr: str) -> Any:
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return None
    return getattr(mod, attr, None)


def dns_records(cfg: Config, engine: Any, domain: str) -> list[dict[str, Any]] | None:
    """The records to publish for ``domain`` (``dovetail dns DOMAIN``); None when outbound is absent.

    Each record is a mapping with ``type``, ``name``, ``value``, ``purpose`` and ``required``.
    """
    try:
        from ..datadir import Layout
        from ..outbound import DkimKeys, DnsPlanner, Transports
    except ImportError:
        return None
    planner = DnsPlanner(DkimKeys(engine, Layout(cfg.data_dir).dkim), Transports(engine), cfg.hostname)
    return [{"type": r.type, "name": r.name, "value": r.value, "purpose": r.purpose, "required": r.required}
            for r in planner.dns_records(domain)]


def replies_router() -> Any:
    """The replies engine's ``APIRouter`` (``dovetail.replies.api.router``), or None."""
    return _optional("dovetail.replies.api", "router")


def master_status(cfg: Config) -> dict[str, Any] | None:
    """The running master's status file (``run/status.json``); None when no master runs, so a file a
    stopped master left behind is never reported as live."""
    from ..master.pidfile import read_pid
    from ..master.supervisor import read_status

    return read_status(cfg.data_dir) if read_pid(cfg.data_dir / "run" / "master.pid") else None


def service_health(cfg: Config, timeout: float = 0.3) -> list[dict[str, Any]]:
    """Each service as the master reports it (workers alive, restarts, throttling).

    Without a running master (the web app started on its own) each configured listener is probed.
    """
    status = master_status(cfg)
    if status:
        out = []
        for name, svc in status["services"].items():
            workers = svc.get("workers") or []
            alive = sum(1 for w in workers if w.get("pid"))
            if not svc.get("enabled"):
                state = "disabled"
            elif svc.get("throttled"):
                state = "throttled"
            elif alive or any(w.get("idle") for w in workers):
                state = "up"
            else:
                state = "down"
            out.append({"service": name, "listen": ", ".join(svc.get("listen") or []), "status": state,
                        "workers": alive, "restarts": sum(w.get("restarts", 0) for w in workers)})
        return out
    out = []
    for name, key in LISTENERS.items():
        addr = cfg.get(key) or ""
        if not addr:
            out.append({"service": name, "listen": "", "status": "disabled"})
            continue
        host, port = split_hostport(addr)
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        try:
            with socket.create_connection((host, port), timeout=timeout):
                status = "up"
        except OSError:
            status = "down"
        out.append({"service": name, "listen": addr, "status": status})
    return out


def outbound_hooks(engine: Any, cfg: Config) -> tuple[Any, Any]:
    """The replies engine's campaign registry and suppression list for the send API, when present."""
    factory = _optional("dovetail.replies.hooks", "outbound_hooks")
    if factory is None:
        return None, None
    return factory(engine, cfg)
