"""Service table: what runs, where it listens, how many workers (Postfix's master.cf).

Each service has defaults; ``[services.<name>]`` tables in dovetail.toml override them:

    [services.smtpd]
    workers = 2            # processes sharing the listening socket
    max_connections = 500  # per worker
    max_use = 0            # exit and be replaced after this many connections (0: never)
    max_idle = 0           # on-demand: exit after this many idle seconds, start again on a connection
    reuse_port = false     # a listening socket per worker (SO_REUSEPORT): the kernel spreads connections
    enabled = true
    listen = ["0.0.0.0:25"]

``reuse_port`` is on by default for imapd only: its sessions last for hours, and workers that share one
socket race for each connection, so one worker can end up with all of a burst of logins (and one core)
while the others idle; with a socket each, the kernel hashes connections evenly over the workers (as
Dovecot's ``inet_listener { reuse_port }``). Short SMTP connections balance themselves better on a shared
socket: a busy worker simply accepts less. On-demand services (``max_idle``) always share one socket.

The listen addresses default to the ``listen.*`` keys so ``dovetail serve --smtp HOST:PORT`` works.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from ..config import Config, ConfigError, parse_duration, parse_hostport, parse_listen

# smtpd runs one worker per CPU (at most 8) by default: with the Maildir copies committed at the MX
# (mx.direct_delivery) a worker's own loop and fsyncs set the intake's pace; on the shared socket a
# second worker on two cores took 1.40x Postfix's messages/s against 1.14x for one, at the same CPU
# per message (bench/RESULTS.md). Rate limits, screening and slots are counted across the workers.
SMTPD_WORKERS = max(1, min(os.cpu_count() or 1, 8))
# imapd runs one worker per CPU (at most 8) by default: a worker serves many connections from one event
# loop and one storage thread, so it uses one core, where Dovecot forks a process per connection.
IMAPD_WORKERS = max(1, min(os.cpu_count() or 1, 8))
# qmgr runs one queue manager per CPU (at most 8) by default, each delivering a shard of the queue
# (dovetail.queue.shard): signing and relaying a message is CPU work in the manager's process, as
# Postfix spreads it over its smtp(8) processes.
QMGR_WORKERS = max(1, min(os.cpu_count() or 1, 8))

# name -> (listen keys, default workers)
KNOWN: dict[str, tuple[tuple[str, ...], int]] = {
    "smtpd": (("listen.smtp",), SMTPD_WORKERS),
    "submission": (("listen.submission", "listen.submissions"), 1),
    "imapd": (("listen.imap", "listen.imaps"), IMAPD_WORKERS),
    "qmgr": ((), QMGR_WORKERS),
    "replies": ((), 1),
    "web": (("listen.http", "acme.http01_listen", "listen.https"), 1),
    "certs": ((), 1),
    "lmtpd": (("listen.lmtp",), 1),
    "transfer": (("listen.transfer",), 1),
}
SERVICE_KEYS = {"enabled", "listen", "workers", "max_connections", "max_idle", "max_use", "reuse_port"}
REUSE_PORT_DEFAULT = {"imapd"}


@dataclass(frozen=True)
class ServiceSpec:
    """One service's settings; two specs that compare equal need no restart on reload."""

    name: str
    enabled: bool = True
    listen: tuple[str, ...] = ()
    workers: int = 1
    max_connections: int = 0
    max_idle: float = 0.0
    max_use: int = 0
    reuse_port: bool = False
    settings: str = field(default="", compare=True)  # fingerprint of the config keys the service reads

    @property
    def sockets_per_address(self) -> int:
        """Listening sockets per TCP address: one per worker with ``reuse_port``, else one shared."""
        return self.workers if self.reuse_port and self.workers > 1 and not self.max_idle else 1

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("settings")
        return data


def _prefixes(name: str) -> tuple[str, ...]:
    return {
        "smtpd": ("smtp.", "mx.", "dns.", "directory.", "auth.", "server.", "tls.", "database."),
        "submission": ("smtp.", "directory.", "auth.", "server.", "tls.", "database."),
        "imapd": ("imap.", "auth.", "server.", "tls.", "database.", "node.", "cluster."),
        "qmgr": ("queue.", "directory.", "server.", "database.", "outbound."),
        "replies": ("replies.", "database.", "server."),
        "web": ("web.", "database.", "server.", "tls."),
        "certs": ("acme.", "dns.", "database.", "server.", "tls."),
        "lmtpd": ("lmtp.", "smtp.", "directory.", "replies.", "server.", "database."),
        "transfer": ("cluster.", "node.", "server.", "database."),
    }.get(name, ("server.",))


def service_specs(cfg: Config) -> dict[str, ServiceSpec]:
    """The effective services of ``cfg``, validated (bad tables raise ConfigError)."""
    specs: dict[str, ServiceSpec] = {}
    for name, (listen_keys, workers) in KNOWN.items():
        table = cfg.extra.get(f"services.{name}", {}) or {}
        if not isinstance(table, dict):
            raise ConfigError(f"services.{name}", table, "must be a table")
        unknown = set(table) - SERVICE_KEYS
        if unknown:
            raise ConfigError(f"services.{name}.{sorted(unknown)[0]}", table[sorted(unknown)[0]],
                              f"unknown service setting (known: {', '.join(sorted(SERVICE_KEYS))})")
        listen = tuple(a for a in (cfg[k] for k in listen_keys) if a)
        if "listen" in table:
            raw = table["listen"]
            items = [raw] if isinstance(raw, str) else list(raw)
            try:
                parse = parse_listen if name == "lmtpd" else parse_hostport  # unix sockets: lmtpd only
                listen = tuple(parse(a) for a in items if str(a).strip())
            except ValueError as exc:
                raise ConfigError(f"services.{name}.listen", raw, str(exc)) from None
        values: dict[str, Any] = {}
        for key, conv, low in (("workers", int, 1), ("max_connections", int, 0), ("max_use", int, 0)):
            if key in table:
                try:
                    values[key] = conv(table[key])
                except (TypeError, ValueError):
                    raise ConfigError(f"services.{name}.{key}", table[key], "expected an integer") from None
                if values[key] < low:
                    raise ConfigError(f"services.{name}.{key}", table[key], f"must be at least {low}")
        if "max_idle" in table:
            try:
                values["max_idle"] = parse_duration(table["max_idle"])
            except ValueError as exc:
                raise ConfigError(f"services.{name}.max_idle", table["max_idle"], str(exc)) from None
        enabled = table.get("enabled", True)
        if not isinstance(enabled, bool):
            raise ConfigError(f"services.{name}.enabled", enabled, "expected true or false")
        if listen_keys and not listen:
            enabled = False
        reuse_port = table.get("reuse_port", name in REUSE_PORT_DEFAULT)
        if not isinstance(reuse_port, bool):
            raise ConfigError(f"services.{name}.reuse_port", reuse_port, "expected true or false")
        fingerprint = json.dumps({k: v for k, v in sorted(cfg.values.items())
                                  if k.startswith(_prefixes(name))}, default=str, sort_keys=True)
        specs[name] = ServiceSpec(name=name, enabled=enabled, listen=listen,
                                  workers=values.get("workers", workers),
                                  max_connections=values.get("max_connections", 0),
                                  max_idle=values.get("max_idle", 0.0), max_use=values.get("max_use", 0),
                                  reuse_port=reuse_port, settings=fingerprint)
    return specs
