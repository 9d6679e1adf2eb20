"""``dovetail serve``: run the services of one data directory in the foreground.

Each service is started only when it is enabled (a non-empty listen address) and built; what is
not started is said on stderr, so an operator sees at once what is running.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

from .config import Config
from .log import configure, get_logger

log = get_logger("master")

# name -> (listen key, starter). A starter returns an async "stop" callable.
Starter = Callable[[Config, "Runtime"], Awaitable[Callable[[], Awaitable[None]]]]


class Runtime:
    """Objects shared by the in-process services (engine, directory, resolver, queue)."""

    def __init__(self, cfg: Config) -> None:
        from .datadir import Layout
        from .db import connect_and_migrate
        from .directory import Directory, Resolver

        self.cfg = cfg
        self.layout = Layout(cfg.data_dir)
        self.engine = connect_and_migrate(cfg)
        self.directory = Directory(self.engine)
        self.resolver = Resolver(self.directory, self.layout.mail,
                                 depth_limit=cfg["directory.alias_depth_limit"],
                                 default_postmaster=cfg["directory.default_postmaster"],
                                 check_interval=cfg["directory.cache_check_interval"])


SERVICES: dict[str, tuple[str, Starter | None]] = {
    "smtpd": ("listen.smtp", None),
    "submission": ("listen.submission", None),
    "imapd": ("listen.imap", None),
    "web": ("listen.http", None),
}


async def _main(cfg: Config) -> int:
    runtime = Runtime(cfg)
    stops: list[Callable[[], Awaitable[None]]] = []
    for name, (key, starter) in SERVICES.items():
        addr = cfg[key]
        if not addr:
            log.info("service disabled", service=name, reason=f"{key} is empty")
            continue
        if starter is None:
            log.warning("service not available in this build", service=name, listen=addr)
            continue
        stops.append(await starter(cfg, runtime))
        log.info("service started", service=name, listen=addr)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    log.info("ready", data_dir=str(cfg.data_dir), services=len(stops))
    await done.wait()
    log.info("stopping")
    for stop in reversed(stops):
        await stop()
    return 0


def run(cfg: Config) -> int:
    configure(cfg["log.level"], cfg["log.file"] or None, json=cfg["log.format"] == "json")
    return asyncio.run(_main(cfg))
