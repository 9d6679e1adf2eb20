"""``dovetail status|stop|reload``: talk to the running master through its pid file and status file."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from .context import Context, emit_json, emit_table, fail

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
    result = {"running": bool(pid), "pid": pid, "uptime": round(time.time() - data["started"]) if data else None,
              "services": data["services"] if data else {}, "queue": queue,
              "warnings": data.get("warnings", []) if data else []}
    if as_json:
        emit_json(result)
    else:
        if not pid:
            print("dovetail is not running")
        else:
            print(f"dovetail master pid {pid}, up {result['uptime']}s")
            rows = []
            for name, svc in result["services"].items():
                state = "off" if not svc["enabled"] else ("THROTTLED" if svc["throttled"] else "running")
                for w in svc["workers"] or [None]:
                    rows.append([name, state, ",".join(svc["listen"]) or "-",
                                 (w or {}).get("pid") or "-", (w or {}).get("uptime") or "-",
                                 (w or {}).get("restarts", "-"), (w or {}).get("connections") or 0])
            emit_table(["service", "state", "listen", "pid", "uptime", "restarts", "conns"], rows)
            for warning in result["warnings"]:
                print(f"warning: {warning}")
        print("queue: " + ", ".join(f"{k}={v}" for k, v in queue.items()))
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


def register(app: typer.Typer) -> None:
    app.command("status")(status)
    app.command("stop")(stop)
    app.command("reload")(reload)
