"""The replies service: the webhook dispatcher plus one IMAP source per configured account.

Accounts are re-read every ``account_refresh`` seconds, so one added with the API or CLI starts
without a restart and a removed one stops. The local source needs no task here: it runs inside the
delivery agent's process (:class:`~dovetail.replies.sources.local.LocalHook`), and its events reach
the dispatcher through the outbox; the storing process wakes the dispatcher through ``run/replies.wake``
(:mod:`.wake`), and the dispatcher also polls every ``poll_interval`` seconds in case a wake-up is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from dovetail.datadir import Layout
from dovetail.log import get_logger

from .broker import NatsPublisher
from .dispatcher import Dispatcher
from .service import RepliesService
from .sources.imap import ImapAccount, ImapAccounts, ImapSource
from .wake import WakeListener, wake_path

log = get_logger("replies")

DEFAULT_POLL_INTERVAL = 0.25
DEFAULT_ACCOUNT_REFRESH = 30.0


class RepliesEngine:
    def __init__(self, engine: Engine, data_dir: Path, *, poll_interval: float = DEFAULT_POLL_INTERVAL,
                 account_refresh: float = DEFAULT_ACCOUNT_REFRESH, ssl_context: ssl.SSLContext | None = None,
                 dispatcher_options: dict[str, Any] | None = None, wake_socket: Path | None = None) -> None:
        self.service = RepliesService.open(engine, data_dir)
        self.accounts = ImapAccounts(engine, self.service.sealer)
        self.dispatcher = Dispatcher(self.service.outbox, poll_interval=poll_interval, **(dispatcher_options or {}))
        self.account_refresh = account_refresh
        self.wake_socket = wake_socket  # run/replies.wake: deliveries in other processes wake the dispatcher
        self.ssl_context = ssl_context
        self.sources: dict[ImapAccount, tuple[ImapSource, asyncio.Event, asyncio.Task[None]]] = {}

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        self.service.on_event(lambda _eid: loop.call_soon_threadsafe(self.dispatcher.wake))
        dispatching = asyncio.create_task(self.dispatcher.run(stop))
        listener = None
        if self.wake_socket is not None:
            listener = WakeListener(self.wake_socket, self.dispatcher.wake)
            try:
                listener.start()
            except OSError as exc:  # the dispatcher still polls
                log.warning("cannot listen for wake-ups", path=str(self.wake_socket), error=str(exc))
                listener = None
        try:
            while not stop.is_set():
                await self._refresh_sources()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.account_refresh):  # not wait_for: it can drop a cancel
                        await stop.wait()
        finally:
            if listener is not None:
                listener.stop()
            tasks = [t for _, _, t in self.sources.values()] + [dispatching]
            for _source, source_stop, _task in self.sources.values():
                source_stop.set()
            if not stop.is_set():  # cancelled rather than stopped: take the children down with us
                for task in tasks:
                    task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _refresh_sources(self) -> None:
        try:
            wanted = set(await asyncio.to_thread(self.accounts.list))
        except Exception as exc:  # noqa: BLE001 - the database may be briefly away; keep what runs
            log.warning("cannot read IMAP accounts", error=str(exc))
            return
        for account in list(self.sources):
            if account not in wanted:
                _source, source_stop, _task = self.sources.pop(account)
                source_stop.set()
                log.info("IMAP source stopped", account=account.id)
        for account in wanted - set(self.sources):
            source = ImapSource(self.service, account, ssl_context=self.ssl_context)
            source_stop = asyncio.Event()
            self.sources[account] = (source, source_stop, asyncio.create_task(source.run(source_stop)))
            log.info("IMAP source started", account=account.id, host=account.host, folder=account.folder)


def nats_publisher(cfg: Any) -> NatsPublisher | None:
    """The publisher of ``nats:`` endpoints' events, when ``events.nats_url`` names a server."""
    url = str(cfg["events.nats_url"] or "")
    if not url:
        return None
    return NatsPublisher(url, stream=cfg["events.nats_stream"], prefix=cfg["events.nats_subject_prefix"])


async def run_replies(cfg: Any, stop: asyncio.Event, ready: Callable[[], None] = lambda: None) -> int:
    """Entry point for the master's ``replies`` service: ``cfg`` is the data directory's Config;
    ``ready`` is called once the engine is built (its keys read), before it runs.

    The master migrated the database before it forked this worker; the migrations are not read again."""
    from dovetail.db import make_engine

    engine = make_engine(cfg.database_url)
    try:
        replies = RepliesEngine(engine, cfg.data_dir, wake_socket=wake_path(Layout(cfg.data_dir).run),
                                dispatcher_options={"broker": nats_publisher(cfg)})
        ready()
        await replies.run(stop)
    finally:
        engine.dispose()
    return 0
