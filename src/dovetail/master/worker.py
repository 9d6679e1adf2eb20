"""Inside a worker process: reset what the master set up, drop privileges, run one service.

The event loop is created here, after the fork (never inherited). TLS material is loaded
before privileges are dropped, so the fallback key of ``dovetail init`` can stay readable by root only;
the certificate store is the service user's, so renewed certificates load after the drop. A worker
tells the master when its service is serving (:class:`Readiness`), or why it could not start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import uvloop

from ..certs.sni import listener_context
from ..certs.store import CertStore
from ..config import Config
from ..log import configure_from, get_logger, reopen
from ..privileges import die_with_parent, drop_privileges
from ..web import counters
from .services import ServiceSpec

WORKER_THREADS = 64
EXIT_IDLE = 75
EXIT_MAX_USE = 76


class Readiness:
    """The write end of the pipe the master reads at a worker's start: ``ready`` once the service
    serves, or one line saying why it could not start. The master treats a service that dies before
    its first ``ready`` as one that cannot start, and stops with that line instead of restarting it."""

    def __init__(self, fd: int = -1) -> None:
        self.fd = fd

    def ready(self) -> None:
        self._send(b"ready\n")

    def failed(self, reason: str) -> None:
        self._send(" ".join(reason.split()).encode(errors="replace")[:2000] + b"\n")

    def _send(self, data: bytes) -> None:
        if self.fd < 0:
            return
        fd, self.fd = self.fd, -1
        with contextlib.suppress(OSError):
            os.write(fd, data)
            os.close(fd)


@dataclass
class WorkerContext:
    cfg: Config
    spec: ServiceSpec
    sockets: list[socket.socket]
    index: int
    ssl_context: ssl.SSLContext | None
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    readiness: Readiness = field(default_factory=Readiness)

    def ready(self) -> None:
        """Tell the master this worker's service is serving."""
        self.readiness.ready()

    @property
    def grace(self) -> float:
        return float(self.cfg["server.shutdown_grace"])

    def stats_path(self) -> Any:
        return self.cfg.data_dir / "run" / "stats" / f"{self.spec.name}.{self.index}.json"


Runner = Callable[[WorkerContext], Awaitable[int]]


def server_ssl_context(cfg: Config, acme_tls_alpn: bool = False) -> ssl.SSLContext | None:
    """The listeners' TLS context: SNI picks each name's certificate from the store (``certs.sni``), with
    the ``tls.cert``/``tls.key`` pair as the fallback; None when there is no certificate at all."""
    store = CertStore(cfg.data_dir / "tls")
    return listener_context(store, cfg.hostname, (cfg.path("tls.cert"), cfg.path("tls.key")),
                            alpn_challenges=acme_tls_alpn)


def worker_main(cfg: Config, spec: ServiceSpec, runner: Runner, sockets: list[socket.socket], index: int,
                close_fds: list[int], readiness: Readiness) -> int:
    """Entry point of a freshly forked worker; returns its exit status."""
    with contextlib.suppress(ValueError):
        signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # reloads are the master's business
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the master, which drains us
    signal.signal(signal.SIGUSR1, _reopen_log)  # the master's word after logrotate moved the file
    for fd in close_fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    parent = os.getppid()
    die_with_parent(signal.SIGKILL)
    if os.getppid() != parent:  # the master died between fork and prctl
        return 1
    configure_from(cfg)
    ssl_context = server_ssl_context(cfg, acme_tls_alpn=spec.name == "web")
    drop_privileges(cfg["server.user"])
    # The kernel clears the parent-death signal when the effective user changes: ask again as the
    # service user, or a worker outlives a master killed with SIGKILL (holding its sockets' port).
    die_with_parent(signal.SIGKILL)
    if os.getppid() != parent:
        return 1
    uvloop.install()
    return asyncio.run(_run(runner, cfg, spec, sockets, index, ssl_context, readiness))


def _reopen_log(_signum: int, _frame: Any) -> None:
    """A plain handler, not the loop's: it must outlive the event loop (a worker may still be exiting)."""
    reopen()


async def _run(runner: Runner, cfg: Config, spec: ServiceSpec, sockets: list[socket.socket], index: int,
               ssl_context: ssl.SSLContext | None, readiness: Readiness) -> int:
    ctx = WorkerContext(cfg=cfg, spec=spec, sockets=sockets, index=index, ssl_context=ssl_context,
                        readiness=readiness)
    loop = asyncio.get_running_loop()
    # Disk work (fsync, Maildir writes) runs in threads; asyncio's default pool (cores + 4) would cap a
    # 2-core worker at 6 commits or deliveries in flight, below smtp/queue concurrency.
    loop.set_default_executor(ThreadPoolExecutor(max_workers=WORKER_THREADS, thread_name_prefix=spec.name))
    loop.add_signal_handler(signal.SIGTERM, ctx.stop.set)
    try:
        return await runner(ctx)
    finally:
        await asyncio.to_thread(_flush_counters)


def _flush_counters() -> None:
    """Write this worker's pending mail-flow counts before it exits (workers leave with os._exit)."""
    with contextlib.suppress(Exception):
        counters.stop_flusher()


async def supervise_listeners(ctx: WorkerContext, servers: list[Any],
                              stop_all: Callable[[float], Awaitable[None]],
                              extra_stats: Callable[[], dict[str, Any]] | None = None) -> int:
    """Serve until told to stop, ``max_use`` connections were taken, or ``max_idle`` passed idle.

    Also publishes this worker's counters to ``run/stats/`` for ``dovetail status`` and ``/metrics``
    (with what ``extra_stats`` adds: the MX's screening decisions and stress mode).
    """
    log = get_logger(ctx.spec.name)
    spec = ctx.spec
    last_busy = time.monotonic()
    stats = ctx.stats_path()
    stats.parent.mkdir(parents=True, exist_ok=True)
    ctx.ready()
    code = 0
    while not ctx.stop.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(ctx.stop.wait(), 1.0)
        active = sum(_active(s) for s in servers)
        total = sum(getattr(s, "connections_total", 0) for s in servers)
        published = {"pid": os.getpid(), "service": spec.name, "worker": ctx.index,
                     "connections": active, "connections_total": total, "time": time.time()}
        if extra_stats is not None:
            published.update(extra_stats())
        _write_stats(stats, published)
        now = time.monotonic()
        if active:
            last_busy = now
        if spec.max_use and total >= spec.max_use:
            log.info("max_use reached, exiting", connections=total)
            code = EXIT_MAX_USE
            break
        if spec.max_idle and not active and now - last_busy >= spec.max_idle:
            log.info("idle, exiting", idle=f"{spec.max_idle:g}s")
            code = EXIT_IDLE
            break
    await stop_all(ctx.grace)
    with contextlib.suppress(FileNotFoundError):
        stats.unlink()
    return code


def _active(server: Any) -> int:
    value = getattr(server, "active_connections", None)
    if value is None:
        value = len(getattr(server, "sessions", ()))
    return int(value)


def _write_stats(path: Any, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    with contextlib.suppress(OSError):
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)
