"""Publication of events to a message broker (NATS JetStream) for users who consume events that way.

A tenant subscribes with an endpoint whose URL is ``nats:`` (``dovetail webhooks add --tenant acme
nats:``); the broker itself is the operator's (``events.nats_url``), so a tenant can neither point
the service at another server nor publish outside its own subjects. Such endpoints go through the
same outbox as webhooks, with the same leases, retries, dead letters and views: the dispatcher hands
their deliveries to :class:`NatsPublisher` instead of POSTing them.

Each event is published to ``<events.nats_subject_prefix>.<tenant>.<event type>`` (for example
``dovetail.acme.reply.received``) on a JetStream stream that takes ``<prefix>.>`` (created when
missing). The ``Nats-Msg-Id`` header is the event id, so JetStream drops the repeat of a publication
whose acknowledgement was lost (at-least-once on our side, exactly-once in the stream inside its
duplicate window); the payload is the webhook body with its signature headers.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from dovetail.log import get_logger

log = get_logger("replies")

NATS_ENDPOINT = "nats:"


def is_broker_url(url: str) -> bool:
    return url.strip().lower() == NATS_ENDPOINT


class BrokerError(Exception):
    """A publication that was not acknowledged (server away, stream refused, timeout)."""


class NatsPublisher:
    def __init__(self, url: str, *, stream: str, prefix: str, timeout: float = 10.0) -> None:
        self.url = url
        self.stream = stream
        self.prefix = prefix.strip(".")
        self.timeout = timeout
        self._nc: Any = None
        self._js: Any = None
        self._lock = asyncio.Lock()

    def subject(self, payload: dict[str, Any]) -> str:
        """``<prefix>.<tenant>.<event type>``: tenant names and event types hold no NATS wildcards."""
        tenant = str(payload.get("tenant") or "_")
        etype = str(payload.get("type") or "event")
        return ".".join(_token(part) for part in (*self.prefix.split("."), tenant, *etype.split(".")))

    async def publish(self, event_id: str, body: bytes, headers: dict[str, str]) -> None:
        js = await self._jetstream()
        try:
            payload = json.loads(body)
        except ValueError:
            payload = {}
        try:
            await js.publish(self.subject(payload), body, timeout=self.timeout,
                             headers={"Nats-Msg-Id": event_id, **headers})
        except Exception as exc:  # noqa: BLE001 - every failure is a retry for the outbox
            await self._reset()
            raise BrokerError(f"{type(exc).__name__}: {exc}") from None

    async def _jetstream(self) -> Any:
        async with self._lock:
            if self._js is not None and self._nc is not None and self._nc.is_connected:
                return self._js
            await self._reset_locked()
            import nats
            from nats.js.errors import NotFoundError

            try:
                # One attempt (nats-py loops for ever on a refused first connect with 0 attempts); the
                # outbox's retry schedule, not the client, decides when to try again.
                nc = await asyncio.wait_for(nats.connect(
                    self.url, connect_timeout=self.timeout, max_reconnect_attempts=1, reconnect_time_wait=0.1,
                    name="dovetail-replies", error_cb=_quiet), self.timeout * 2)
            except Exception as exc:  # noqa: BLE001 - unreachable, refused, TLS, auth
                raise BrokerError(f"cannot connect to {self.url}: {type(exc).__name__}: {exc}") from None
            js = nc.jetstream(timeout=self.timeout)
            try:
                try:
                    await js.stream_info(self.stream)
                except NotFoundError:
                    await js.add_stream(name=self.stream, subjects=[f"{self.prefix}.>"])
                    log.info("NATS stream created", stream=self.stream, subjects=f"{self.prefix}.>")
            except Exception as exc:  # noqa: BLE001
                await nc.close()
                raise BrokerError(f"stream {self.stream}: {type(exc).__name__}: {exc}") from None
            self._nc, self._js = nc, js
            return js

    async def _reset(self) -> None:
        async with self._lock:
            await self._reset_locked()

    async def _reset_locked(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None:
            try:
                await nc.close()
            except Exception:  # noqa: BLE001, S110 - closing a broken connection
                pass

    async def close(self) -> None:
        await self._reset()


async def _quiet(exc: Exception) -> None:
    """nats-py reports connection errors through a callback; the outbox records them instead."""
    log.debug("NATS connection error", error=repr(exc))


def _token(text: str) -> str:
    """One subject token: no dots, wildcards or white space."""
    cleaned = "".join(c if c.isalnum() or c in "-_" else "_" for c in text)
    return cleaned or "_"
