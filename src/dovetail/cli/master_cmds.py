"""``dovetail status|stop|reload|log reopen``: talk to the running master through its pid file and status file."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .context import Context, emit_json, emit_table, fail

if TYPE_CHECKING:
    from ..outbound.keys import KeyInfo

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _master_pid(c: Context) -> int | None:
    from ..status import pid_path, read_pid

    return read_pid(pid_path(c.data_dir))


def _queue_sizes(root: Path) -> dict[str, int]:
    sizes = {}
    for state in ("incoming", "active", "deferred", "hold", "corrupt"):
        try:
            sizes[state] = sum(1 for _ in os.scandir(root / state))
        except FileNotFoundError:
            sizes[state] = 0
    return sizes


def _worker_stats(run: Path) -> dict[int, dict[str, Any]]:
    out = {}
    for path in (run / "stats").glob("*.json"):
        try:
            data = json.loads(path.read_text())
            out[int(data["pid"])] = data
        except (OSError, ValueError, KeyError):
            continue
    return out


def duration(seconds: float | None) -> str:
    """An uptime as people read one: ``45s``, ``12m05s``, ``3h12m``, ``2d04h``."""
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _unreadable_dkim_keys(c: Context) -> list[KeyInfo]:
    """The signing keys the services cannot load (their domains' mail waits in the queue)."""
    from .outbound_cmds import dkim_store

    return [k for k in dkim_store(c).list(check=True) if k.problem]


def _one_click(c: Context) -> dict[str, Any]:
    """Whether bulk mail carries the RFC 8058 one-click link, where it points, or why not."""
    from ..outbound.unsubscribe import PATH, one_click_off_reason

    reason = one_click_off_reason(c.config)
    url = c.config.get("web.public_url") or ""
    return {"enabled": reason is None, "url": f"{url}{PATH}/<token>" if url else None, "reason": reason}


def _cluster(c: Context) -> dict:
    """This node's name and the cluster's node list (empty on a single installation)."""
    from ..directory.nodes import NodeStore

    return {"node": str(c.config["node.name"] or "") or None,
            "nodes": [{"name": n.name, "roles": list(n.roles), "lmtp": n.lmtp, "imap": n.imap, "state": n.state,
                       "tenants": n.tenants} for n in NodeStore(c.engine).list()]}


def _pending_moves(c: Context) -> list[str]:
    """Tenant moves an interruption left unfinished, each with the command that carries it on."""
    from ..move.pending import pending_notes

    return pending_notes(c.engine, str(c.config["node.name"] or ""))


def status(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Services, workers (pids, uptime, restarts, connections) and queue sizes."""
    from ..status import read_status

    c: Context = ctx.obj
    c.require_init()
    pid = _master_pid(c)
    data = read_status(c.data_dir) if pid else None
    queue = _queue_sizes(c.layout.queue)
    stats = _worker_stats(c.layout.run)
    if data:
        for svc in data["services"].values():
            for w in svc["workers"]:
                w["connections"] = stats.get(w["pid"] or -1, {}).get("connections")
    unsignable = _unreadable_dkim_keys(c)
    result = {"running": bool(pid), "pid": pid, "uptime": round(time.time() - data["started"]) if data else None,
              "services": data["services"] if data else {}, "queue": queue,
              "dkim_unreadable": [{"domain": k.domain, "selector": k.selector, "state": k.state,
                                   "problem": k.problem} for k in unsignable],
              "warnings": data.get("warnings", []) if data else [],
              "one_click_unsubscribe": _one_click(c), "cluster": _cluster(c),
              "moves_pending": _pending_moves(c)}
    if as_json:
        emit_json(result)
    else:
        if not pid:
            print("dovetail is not running")
        else:
            print(f"dovetail master pid {pid}, up {duration(result['uptime'])}")
            rows = []
            for name, svc in result["services"].items():
                state = "off" if not svc["enabled"] else ("THROTTLED" if svc["throttled"] else "running")
                for w in svc["workers"] or [None]:
                    rows.append([name, state, ",".join(svc["listen"]) or "-",
                                 (w or {}).get("pid") or "-", duration((w or {}).get("uptime")),
                                 (w or {}).get("restarts", "-"), (w or {}).get("connections") or 0])
            emit_table(["service", "state", "listen", "pid", "uptime", "restarts", "conns"], rows)
            for warning in result["warnings"]:
                print(f"warning: {warning}")
        print("queue: " + ", ".join(f"{k}={v}" for k, v in queue.items()))
        for k in unsignable:
            print(f"dkim: {k.domain} {k.selector} {k.status}; its mail is deferred")
        cluster = result["cluster"]
        if cluster["nodes"]:
            print(f"cluster: this node {cluster['node'] or '(node.name unset)'}; " + "; ".join(
                f"{n['name']} {','.join(n['roles'])} {n['state']} {n['tenants']} tenant(s)"
                for n in cluster["nodes"]))
        for note in result["moves_pending"]:
            print(f"move: {note}")
        one_click = result["one_click_unsubscribe"]
        print(f"unsubscribe: one-click on at {one_click['url']}" if one_click["enabled"]
              else f"unsubscribe: {one_click['reason']}")
    if not pid:
        raise typer.Exit(1)


def stop(ctx: typer.Context, wait: Annotated[float, typer.Option(help="Seconds to wait for the exit.")] = 60.0,
         as_json: JsonOpt = False) -> None:
    """Stop the master gracefully (SIGTERM) and wait for it to exit."""
    c: Context = ctx.obj
    pid = _master_pid(c)
    if not pid:
        fail("dovetail is not running")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and _master_pid(c):
        time.sleep(0.1)
    if _master_pid(c):
        fail(f"master {pid} did not stop within {wait:g}s")
    emit_json({"stopped": pid}) if as_json else print(f"dovetail master {pid} stopped")


def reload(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Re-read dovetail.toml (SIGHUP): only services whose settings changed are restarted."""
    from .. import config as config_mod

    c: Context = ctx.obj
    config_mod.load(c.data_dir)  # refuse a broken file here, with the key and the reason
    pid = _master_pid(c)
    if not pid:
        fail("dovetail is not running")
    os.kill(pid, signal.SIGHUP)
    emit_json({"reloaded": pid}) if as_json else print(f"dovetail master {pid}: reload requested")


log_app = typer.Typer(help="The log file (log.file).", no_args_is_help=True)


@log_app.command("reopen")
def log_reopen(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Open the log file again by its name (SIGUSR1), in the master and every worker: logrotate's postrotate."""
    c: Context = ctx.obj
    pid = _master_pid(c)
    if not pid:
        fail("dovetail is not running")
    os.kill(pid, signal.SIGUSR1)
    emit_json({"reopened": pid}) if as_json else print(f"dovetail master {pid}: log reopen requested")


def register(app: typer.Typer) -> None:
    app.command("status")(status)
    app.command("stop")(stop)
    app.command("reload")(reload)
    app.add_typer(log_app, name="log")
