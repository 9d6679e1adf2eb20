"""The running master's status as other processes read it: ``run/master.pid`` and ``run/status.json``.

The master writes both; ``dovetail status``, the web admin's service health and the metrics read
them through this module, so none of them imports the supervisor.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

PID_FILE = "master.pid"
STATUS_FILE = "status.json"


def pid_path(data_dir: Path) -> Path:
    return Path(data_dir) / "run" / PID_FILE


def status_path(data_dir: Path) -> Path:
    return Path(data_dir) / "run" / STATUS_FILE


def read_pid(path: Path) -> int | None:
    """The running master's pid, or None when no master holds the lock on ``path``."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 32).decode(errors="replace").strip()
            return int(text) if text.isdigit() else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def read_status(data_dir: Path) -> dict[str, Any] | None:
    """The last status the master wrote (it may have stopped since: see :func:`running_status`)."""
    try:
        return json.loads(status_path(data_dir).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_status(data_dir: Path, data: dict[str, Any]) -> None:
    """Replace the status file atomically (readers never see half of it)."""
    path = status_path(data_dir)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def running_status(data_dir: Path) -> dict[str, Any] | None:
    """The running master's status; None when no master runs, so a file a stopped master left
    behind is never reported as live."""
    return read_status(data_dir) if read_pid(pid_path(data_dir)) else None


def read_json_dir(directory: Path, max_files: int, max_bytes: int) -> list[dict[str, Any]]:
    """The JSON objects workers publish as ``directory/*.json`` (counters, per-destination figures), at
    most ``max_files`` files of ``max_bytes`` each; unreadable and non-object files are skipped."""
    out: list[dict[str, Any]] = []
    try:
        paths = sorted(directory.glob("*.json"))[:max_files]
    except OSError:
        return out
    for path in paths:
        try:
            with open(path, "rb") as fh:
                data = json.loads(fh.read(max_bytes + 1)[:max_bytes])
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            out.append(data)
    return out
