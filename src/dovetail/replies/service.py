"""One object holding the replies engine's parts for a data directory: what services and the web app use."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.engine import Engine

from ..sealing import Sealer
from ..vault import credentials_sealer
from . import tokens
from .outbox import Outbox
from .pipeline import Pipeline, ReplyRecord, Source
from .queries import Queries
from .registry import Registry


class RepliesService:
    def __init__(self, engine: Engine, secret: bytes, *, clock: Callable[[], float] = time.time,
                 allow_private_webhooks: bool = False, sealer: Sealer | None = None, authserv_id: str = "",
                 broker: bool = False) -> None:
        self.engine = engine
        self.sealer = sealer  # seals the IMAP-source passwords (see dovetail.sealing)
        self.registry = Registry(engine, secret)
        self.outbox = Outbox(engine, allow_private=allow_private_webhooks, sealer=sealer, broker=broker)
        self.queries = Queries(engine)
        self._listeners: list[Callable[[str], object]] = []
        self.pipeline = Pipeline(engine, secret, on_event=self._emit, clock=clock, authserv_id=authserv_id)

    @classmethod
    def open(cls, engine: Engine, data_dir: Path, *, clock: Callable[[], float] = time.time,
             allow_private_webhooks: bool | None = None, sealer: Sealer | None = None) -> RepliesService:
        """The service of a data directory; unless given, ``replies.webhook_allow_private`` comes from its
        config and the sealer is the data directory's. Authentication-Results are believed only from
        ``server.hostname`` (our MX)."""
        from dovetail.config import load

        cfg = load(data_dir)
        if allow_private_webhooks is None:
            allow_private_webhooks = bool(cfg.get("replies.webhook_allow_private", False))
        return cls(engine, tokens.load_secret(data_dir, engine), clock=clock,
                   allow_private_webhooks=allow_private_webhooks,
                   sealer=sealer if sealer is not None else credentials_sealer(data_dir, engine),
                   authserv_id=cfg.hostname,
                   broker=bool(cfg.get("events.nats_url", "")))

    def on_event(self, listener: Callable[[str], object]) -> None:
        """Call ``listener(event_id)`` after each stored event (e.g. ``Dispatcher.wake``)."""
        self._listeners.append(listener)

    def _emit(self, event_id: str) -> None:
        for listener in self._listeners:
            listener(event_id)

    def process_message(self, raw: bytes, source: Source) -> ReplyRecord:
        return self.pipeline.process_message(raw, source)
