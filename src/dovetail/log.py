"""Logging, set up once per process: one structured line per event.

Every service logs through ``get_logger(component)``. Lines read like Postfix's mail.log
(``<qid>: to=<...>, status=sent``) because mail operators grep logs by queue id; the
key=value tail keeps them machine-readable.

The renderer is on every message's path (several lines per message), so it is kept to a few
string operations: the pid is read once per process (``configure`` runs again after a fork) and
the timestamp is formatted once per second.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

import structlog

_configured = False
_pid = os.getpid()
_stamp = (0, "")


def _timestamp() -> str:
    global _stamp
    now = int(time.time())
    if _stamp[0] != now:
        _stamp = (now, time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now)))
    return _stamp[1]


def _postfix_style(_logger: Any, level: str, event_dict: dict[str, Any]) -> str:
    component = event_dict.pop("component", "dovetail")
    event = event_dict.pop("event", "")
    qid = event_dict.pop("qid", None)
    head = f"{_timestamp()} dovetail/{component}[{_pid}]: {level}: "
    if qid:
        head += f"{qid}: "
    if not event_dict:
        return head + event
    tail = ", ".join(f"{k}={_fmt(v)}" for k, v in event_dict.items())
    return head + event + (", " if event else "") + tail


def _json_renderer(_logger: Any, level: str, event_dict: dict[str, Any]) -> str:
    import json

    event_dict.setdefault("level", level)
    event_dict["timestamp"] = _timestamp()
    event_dict["pid"] = _pid
    return json.dumps(event_dict, default=str)


def _fmt(value: Any) -> str:
    text = str(value)
    return text if text and " " not in text and "," not in text else repr(text)


def configure(level: str = "info", file: str | None = None, json: bool = False) -> None:
    """Route structlog and stdlib logging to stderr (and optionally a file), one line per event."""
    global _configured, _pid
    _pid = os.getpid()
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if file:
        handlers.append(logging.FileHandler(file))
    logging.basicConfig(level=level.upper(), format="%(message)s", handlers=handlers, force=True)
    structlog.configure(
        processors=[_json_renderer if json else _postfix_style],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        cache_logger_on_first_use=False,
    )
    _configured = True


def get_logger(component: str) -> Any:
    """A logger whose lines carry ``dovetail/<component>``; pass ``qid=`` to key a line by queue id."""
    if not _configured:
        configure()
    return structlog.get_logger().bind(component=component)
