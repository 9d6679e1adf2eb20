"""Logging, set up once per process: one structured line per event.

Every service logs through ``get_logger(component)``. Lines read like Postfix's mail.log
(``<qid>: to=<...>, status=sent``) because mail operators grep logs by queue id; the
key=value tail keeps them machine-readable.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

_configured = False


def _postfix_style(_logger: Any, _name: str, event_dict: dict[str, Any]) -> str:
    ts = event_dict.pop("timestamp", "")
    level = event_dict.pop("level", "info")
    component = event_dict.pop("component", "dovetail")
    event = event_dict.pop("event", "")
    qid = event_dict.pop("qid", None)
    head = f"{ts} dovetail/{component}[{_pid()}]: {level}: "
    if qid:
        head += f"{qid}: "
    tail = ", ".join(f"{k}={_fmt(v)}" for k, v in event_dict.items())
    return head + event + ((", " if event else "") + tail if tail else "")


def _fmt(value: Any) -> str:
    text = str(value)
    return text if text and " " not in text and "," not in text else repr(text)


def _pid() -> int:
    import os

    return os.getpid()


def configure(level: str = "info", file: str | None = None, json: bool = False) -> None:
    """Route structlog and stdlib logging to stderr (and optionally a file), one line per event."""
    global _configured
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if file:
        handlers.append(logging.FileHandler(file))
    logging.basicConfig(level=level.upper(), format="%(message)s", handlers=handlers, force=True)
    renderer: Any = structlog.processors.JSONRenderer() if json else _postfix_style
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="%Y-%m-%dT%H:%M:%S", utc=False),
            renderer,
        ],
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
