"""What the web admin shows of the rest of the platform: a domain's DNS records and service health.

Service health comes from the running master's status file (:mod:`dovetail.status`), so the web
app never imports the master that runs it.
"""

from __future__ import annotations

import socket
from typing import Any

from ..certs.store import CertStore, served_chain
from ..config import Config, split_hostport
from ..datadir import Layout
from ..directory import Directory
from ..outbound.dnsrecords import DnsPlanner
from ..outbound.keys import DkimKeys
from ..outbound.transports import Transports
from ..status import running_status

LISTENERS = {
    "smtpd": "listen.smtp",
    "submission": "listen.submission",
    "submissions": "listen.submissions",
    "imapd": "listen.imap",
    "imaps": "listen.imaps",
    "web": "listen.http",
}


def dns_planner(cfg: Config, engine: Any) -> DnsPlanner:
    """The planner ``dovetail dns`` uses, over this data directory (each domain's MTA-STS mode included)."""
    cert = served_chain(CertStore(cfg.data_dir / "tls"), cfg.hostname, cfg.path("tls.cert"))
    return DnsPlanner(DkimKeys(engine, Layout(cfg.data_dir).dkim), Transports(engine), cfg.hostname,
                      directory=Directory(engine), mx_cert_pem=cert)


def dns_records(cfg: Config, engine: Any, domain: str) -> list[dict[str, Any]]:
    """The records to publish for ``domain`` (``dovetail dns DOMAIN``).

    Each record is a mapping with ``type``, ``name``, ``value``, ``purpose`` and ``required``.
    """
    planner = dns_planner(cfg, engine)
    return [{"type": r.type, "name": r.name, "value": r.value, "purpose": r.purpose, "required": r.required}
            for r in planner.dns_records(domain)]


def master_status(cfg: Config) -> dict[str, Any] | None:
    """The running master's status (``run/status.json``); None when no master runs."""
    return running_status(cfg.data_dir)


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
                probed = "up"
        except OSError:
            probed = "down"
        out.append({"service": name, "listen": addr, "status": probed})
    return out

