"""Logging, set up once per process: one structured line per event.

Every service logs through ``get_logger(component)``. Lines read like Postfix's mail.log
(``<qid>: to=<...>, status=sent``) because mail operators grep logs by queue id; the
key=value tail keeps them machine-readable.

Several lines are logged per message, so the path is kept short. ``get_logger`` returns a small
logger with structlog's calling convention (``log.info(event, qid=..., key=value)``, ``bind``) that
renders the line with the one processor structlog is configured with and hands it to ``_Sink``:
structlog's own bound logger (context copy, processor chain, proxy to the sink) cost as much again
as rendering the line, about 4 % of an SMTP worker's CPU, for features the project does not use.
``_Sink`` writes the line to each destination (stderr, and the log file opened
``O_APPEND`` so that the master and its workers can share it). Each line is on its way to the
kernel before the call returns, except in a process that asked for ``hold_lines_per_turn`` (the
MX's smtpd workers): there a line logged on the event loop's thread is held until the end of the
loop's current turn or until the process next answers a client (the SMTP server calls ``flush``
before it writes a reply), whichever comes first, and written together with the other lines held
by then: one ``os.write`` per destination for several lines (an MX worker logs about seven lines
per message; writing each twice was a third of its system calls, and each write released the GIL
to a waiting delivery thread). So a line logged before a reply is in the log before the client
reads the reply, as everywhere else. The batch stays under ``PIPE_BUF`` so that a shared pipe
still receives whole lines. Warnings and errors, and lines logged off the event loop, are written
at once, after what is held; a kill -9 loses at most the info lines of the turn it interrupted
that no reply had followed yet; a process leaving normally (or a worker before ``os._exit``)
writes what it holds, and a fork writes it first so that the child does not repeat it. The stdlib chain (a
``LogRecord`` per line, handler locks, a flush per line) is skipped for our own lines; it still
carries third-party libraries' records to the same destinations, and our lines are also handed at
once to any handler someone else attached to the root logger (pytest's ``caplog``, an embedding
program).

Loggers are usually bound at import time, before ``configure`` runs with the real settings, so
everything ``configure`` changes (destinations, level, format) is looked up when a line is logged,
not captured when the logger is made. The pid is read once per process (``configure`` runs again
after a fork) and the timestamp is formatted once per second.

Third-party records (uvicorn's access and error lines, httpx's requests, SQLAlchemy, Alembic) are
rendered by the same function, so the file reads the same throughout. The file is reopened under
its name by ``reopen`` (the master does it on SIGHUP and SIGUSR1, then tells the workers), which is
what logrotate's ``postrotate`` needs; the new descriptor is ``dup2``-ed onto the old number, so a
thread writing at that moment writes to one file or the other, never to a closed descriptor.
stdlib's ``WatchedFileHandler`` would stat the path before every line; a signal costs nothing.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import structlog

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "warn": 30, "error": 40, "exception": 40, "critical": 50}

_configured = False
_pid = os.getpid()
_stamp = (0, "")
_threshold = logging.INFO
_json = False
# Lines logged on an event loop's thread wait here (per thread) for the end of the loop's turn.
_held = threading.local()
_BATCH_BYTES = 4096  # PIPE_BUF: a write to a pipe up to this size is never interleaved with another's
_running_loop = asyncio.events._get_running_loop  # the C accessor; None off an event loop
_hold = False  # hold_lines_per_turn() was called in this process


def hold_lines_per_turn(on: bool = True) -> None:
    """Hold info lines logged on an event loop until the end of its turn (or ``flush``): for a process
    whose replies to clients call ``flush`` first, so that no reply overtakes a line logged before it."""
    global _hold
    if not on:
        _SINK.write_held()
    _hold = on


def _timestamp() -> str:
    global _stamp
    now = int(time.time())
    if _stamp[0] != now:
        _stamp = (now, time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now)))
    return _stamp[1]


def _postfix_style(_logger: Any, level: str, event_dict: MutableMapping[str, Any]) -> str:
    component = event_dict.pop("component", "dovetail")
    event = event_dict.pop("event", "")
    qid = event_dict.pop("qid", None)
    trace = _traceback(event_dict.pop("exc_info", None))
    head = f"{_timestamp()} dovetail/{component}[{_pid}]: {level}: "
    if qid:
        head += f"{qid}: "
    if not event_dict:
        line = head + event
    else:
        tail = ", ".join(f"{k}={_fmt(v)}" for k, v in event_dict.items())
        line = head + event + (", " if event else "") + tail
    if not trace:
        return line
    prefix = f"{_timestamp()} dovetail/{component}[{_pid}]: {level}: | "
    return "\n".join([line, *(prefix + part for part in trace)])


def _traceback(exc_info: Any) -> list[str]:
    """The lines of the traceback ``log.exception`` (``exc_info=True``) asks for: the exception being handled."""
    if not exc_info:
        return []
    if exc_info is True:
        exc_info = sys.exc_info()
    elif isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    if not isinstance(exc_info, tuple) or exc_info[1] is None:
        return []
    return [part for text in traceback.format_exception(*exc_info) for part in text.rstrip("\n").splitlines()]


def _json_renderer(_logger: Any, level: str, event_dict: MutableMapping[str, Any]) -> str:
    import json

    trace = _traceback(event_dict.pop("exc_info", None))
    if trace:
        event_dict["traceback"] = "\n".join(trace)
    event_dict.setdefault("level", level)
    event_dict["timestamp"] = _timestamp()
    event_dict["pid"] = _pid
    return json.dumps(event_dict, default=str)


def _render(logger: Any, level: str, event_dict: MutableMapping[str, Any]) -> str:
    """The one processor: drops lines below the configured level, then renders in the configured format."""
    if _LEVELS.get(level, 20) < _threshold:
        raise structlog.DropEvent
    return _json_renderer(logger, level, event_dict) if _json else _postfix_style(logger, level, event_dict)


def _fmt(value: Any) -> str:
    text = str(value)
    return text if text and " " not in text and "," not in text else repr(text)


class _Sink:
    """Writes rendered lines straight to file descriptors; one instance per process, reconfigured in place."""

    def __init__(self) -> None:
        self.fds: tuple[int, ...] = (2,)
        self.own_fds: tuple[int, ...] = ()  # opened by configure, closed when it runs again
        self.own_handlers: list[logging.Handler] = []
        self.files: tuple[tuple[int, Path], ...] = ()  # (descriptor, path) of each log file, for reopen

    def emit(self, levelno: int, line: str) -> None:
        data = (line + "\n").encode("utf-8", "backslashreplace")
        held = _held
        loop = None
        if levelno < logging.WARNING and _hold:
            loop = getattr(held, "loop", None)  # the loop whose turn is already holding lines
            if loop is None or not held.scheduled or not loop.is_running():
                loop = _running_loop()  # (it reads the pid: once per turn, not per line)
        if loop is None:
            pending = getattr(held, "data", None)
            if pending:  # what this thread's loop holds goes first, so the lines stay in order
                data = bytes(pending) + data
                pending.clear()
            for fd in self.fds:
                _write_all(fd, data)
        else:
            pending = getattr(held, "data", None)
            if pending is None:
                pending = held.data = bytearray()
            if pending and len(pending) + len(data) > _BATCH_BYTES:
                self.write_held()
            pending += data
            if not getattr(held, "scheduled", False) or held.loop is not loop:
                held.scheduled, held.loop = True, loop
                loop.call_soon(self._end_of_turn)
        handlers = logging.root.handlers
        if len(handlers) > len(self.own_handlers):
            self._forward(levelno, line, handlers)

    def _end_of_turn(self) -> None:
        _held.scheduled = False
        self.write_held()

    def write_held(self) -> None:
        """Write the lines this thread holds (logged on its event loop since the turn began)."""
        pending = getattr(_held, "data", None)
        if pending:
            data = bytes(pending)
            pending.clear()
            for fd in self.fds:
                _write_all(fd, data)

    def _forward(self, levelno: int, line: str, handlers: list[logging.Handler]) -> None:
        if not logging.root.isEnabledFor(levelno):
            return
        record = logging.LogRecord("dovetail", levelno, __file__, 0, line, None, None)
        for handler in handlers:
            if handler not in self.own_handlers and levelno >= handler.level:
                handler.handle(record)

    def debug(self, line: str) -> None:
        self.emit(logging.DEBUG, line)

    def info(self, line: str) -> None:
        self.emit(logging.INFO, line)

    def warning(self, line: str) -> None:
        self.emit(logging.WARNING, line)

    def error(self, line: str) -> None:
        self.emit(logging.ERROR, line)

    def critical(self, line: str) -> None:
        self.emit(logging.CRITICAL, line)

    warn = warning
    exception = error
    fatal = critical
    msg = info


def _write_all(fd: int, data: bytes) -> None:
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError:
        pass  # a closed stderr or a full disk must not take the service down with it


_SINK = _Sink()


def flush() -> None:
    """Write the lines this thread holds now (before a reply to a client, before ``os._exit``)."""
    _SINK.write_held()


def _forget_held() -> None:
    """In a forked child: the parent wrote what it held (``flush`` before the fork); start empty."""
    _held.data = bytearray()
    _held.scheduled, _held.loop = False, None


atexit.register(flush)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=flush, after_in_child=_forget_held)


def _stderr_fd() -> int:
    try:
        return sys.stderr.fileno()
    except (AttributeError, ValueError, OSError):
        return 2  # stderr replaced by an object without a descriptor: write to the process's own


def _sink_factory(*_args: Any) -> _Sink:
    return _SINK


def _from_record(record: logging.LogRecord) -> tuple[str, str, dict[str, Any]]:
    """A third-party record as our (component, event, fields)."""
    name = record.name
    if name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == 5:
        client, method, path, http_version, status = record.args
        return "web", "http request", {"client": client, "method": method, "path": path, "status": status,
                                       "http": http_version}
    if name.startswith("uvicorn"):
        component = "web"
    elif name.startswith(("httpx", "httpcore")):
        component = "http"
    else:
        component = name.split(".", 1)[0] or "python"
    fields: dict[str, Any] = {}
    if record.exc_info and record.exc_info[1] is not None:
        exc = record.exc_info[1]
        fields["error"] = f"{type(exc).__name__}: {exc}"
    return component, " ".join(record.getMessage().split()), fields


class _StdlibHandler(logging.Handler):
    """Carries stdlib records (other libraries') to our destinations, rendered as our own lines."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            component, event, fields = _from_record(record)
            level = record.levelname.lower()
            lines = [_render(None, level, {"component": component, "event": event, **fields})]
            if record.exc_info and record.exc_info[1] is not None:  # the traceback, one line per line
                for text in traceback.format_exception(*record.exc_info):
                    for part in text.rstrip("\n").splitlines():
                        lines.append(_render(None, level, {"component": component, "event": "| " + part}))
        except structlog.DropEvent:
            return
        except Exception:  # noqa: BLE001 - a bad record must not take the caller down
            self.handleError(record)
            return
        data = ("\n".join(lines) + "\n").encode("utf-8", "backslashreplace")
        _SINK.write_held()  # our lines logged before it go first
        for fd in _SINK.fds:
            _write_all(fd, data)


def _open_log(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)


def configure(level: str = "info", file: str | os.PathLike[str] | None = None, json: bool = False) -> None:
    """Route log lines to stderr (and optionally a file), one line per event; loggers made earlier follow."""
    global _configured, _pid, _threshold, _json
    _SINK.write_held()  # to the destinations it was logged for
    _pid = os.getpid()
    _threshold = logging.getLevelName(level.upper())
    _json = json
    for fd in _SINK.own_fds:
        try:
            os.close(fd)
        except OSError:
            pass
    _SINK.fds, _SINK.own_fds, _SINK.files = (_stderr_fd(),), (), ()
    files: list[tuple[int, Path]] = []
    if file:
        path = Path(file).absolute()
        files.append((_open_log(path), path))
    handler = _StdlibHandler()
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    own = tuple(fd for fd, _ in files)
    _SINK.fds, _SINK.own_fds, _SINK.own_handlers, _SINK.files = (_stderr_fd(), *own), own, [handler], tuple(files)
    structlog.configure(
        processors=[_render],
        logger_factory=_sink_factory,
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        cache_logger_on_first_use=False,
    )
    _configured = True


def log_file(value: str, data_dir: Path) -> Path | None:
    """Where ``log.file`` points: relative to the data directory; ``""`` or ``"-"`` means stderr only."""
    if value in ("", "-"):
        return None
    path = Path(value)
    return path if path.is_absolute() else data_dir / path


def configure_from(cfg: Any) -> None:
    """``configure`` with a ``Config``'s ``log.*`` keys."""
    configure(cfg["log.level"], log_file(cfg["log.file"], cfg.data_dir), json=cfg["log.format"] == "json")


def log_files() -> list[Path]:
    """The log files this process writes (for the master to hand them to the service user)."""
    return [path for _, path in _SINK.files]


def reopen() -> None:
    """Open each log file again by its name, on the same descriptor (after logrotate moved it away).

    A file that cannot be opened is reported once and the old one is kept: losing the lines would be worse.
    """
    _SINK.write_held()
    for fd, path in _SINK.files:
        try:
            new = _open_log(path)
        except OSError as exc:
            get_logger("log").error("cannot reopen the log file, still writing the old one", file=str(path),
                                    error=exc.strerror or str(exc))
            continue
        try:
            os.dup2(new, fd, inheritable=False)
        finally:
            os.close(new)


def get_logger(component: str) -> Any:
    """A logger whose lines carry ``dovetail/<component>``; pass ``qid=`` to key a line by queue id."""
    if not _configured:
        configure()
    return _Logger({"component": component})


class _Logger:
    """structlog's bound-logger calls as the services make them, straight to ``_render`` and ``_SINK``."""

    __slots__ = ("_context",)

    def __init__(self, context: dict[str, Any]) -> None:
        self._context = context

    def bind(self, **kw: Any) -> _Logger:
        return _Logger({**self._context, **kw})

    def _log(self, level: str, levelno: int, event: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> None:
        if levelno < _threshold:
            return
        event_dict = {**self._context, **kw}
        event_dict["event"] = event % args if args else event  # last, as structlog adds it
        try:
            line = _render(None, level, event_dict)
        except structlog.DropEvent:
            return
        _SINK.emit(levelno, line)

    def debug(self, event: Any = None, *args: Any, **kw: Any) -> None:
        self._log("debug", logging.DEBUG, event, args, kw)

    def info(self, event: Any = None, *args: Any, **kw: Any) -> None:
        self._log("info", logging.INFO, event, args, kw)

    def warning(self, event: Any = None, *args: Any, **kw: Any) -> None:
        self._log("warning", logging.WARNING, event, args, kw)

    def error(self, event: Any = None, *args: Any, **kw: Any) -> None:
        self._log("error", logging.ERROR, event, args, kw)

    def exception(self, event: Any = None, *args: Any, **kw: Any) -> None:
        kw.setdefault("exc_info", True)
        self._log("error", logging.ERROR, event, args, kw)

    def critical(self, event: Any = None, *args: Any, **kw: Any) -> None:
        self._log("critical", logging.CRITICAL, event, args, kw)

    warn = warning
    fatal = critical
    msg = info
