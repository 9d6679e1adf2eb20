"""The outbound delivery agent: DKIM-sign, then hand the message to a relay or to the recipient's MX.

It implements the queue's ``DeliveryAgent``: one call per queued message with the recipients the
queue manager routed here, one ``DeliveryResult`` per recipient (2xx sent, 4xx and connection
trouble deferred, 5xx bounced), ``relay=host[ip]:port`` and the reply text, from which the queue
manager writes Postfix smtp(8)-style log lines and the DSNs.

Each recipient takes the transport its rule names (:mod:`dovetail.outbound.routing`: recipient
domain, then sender, sender domain, tenant, default), so one message may leave by several ways.
Relay: the transport's smarthost with STARTTLS (certificate verified) or implicit TLS, AUTH when a
user name is set. Direct: MX lookup (``mx``), opportunistic STARTTLS (after a failed handshake the
same MX is tried again in plaintext, as Postfix's ``may`` level does), or verified TLS to a
policy-listed MX when the domain publishes an MTA-STS ``enforce`` policy, or, with ``dane`` on, TLS
whose certificate matches the host's DNSSEC-secured TLSA records (:mod:`dovetail.outbound.dane`; it
overrides MTA-STS, and such a host never gets mail in clear text). Connections are cached
for a short while and reused for the next message to the same host (Postfix's connection cache).

Each destination (recipient domain, provider pattern or relay) is shaped by
:mod:`dovetail.outbound.shaping`: sessions in flight, deliveries per time unit, and a pause after it
answers 421/4.7.x, during which its mail is deferred without a connection. A transport may name a
``bind_address`` (Postfix's ``smtp_bind_address``, per tenant for IP pools): the local address of
its connections; it is part of the connection-cache key, so no session is shared between addresses.

The SMTP client is aiosmtplib; this module adds what it lacks: MX routing, per-recipient outcomes
with enhanced status codes, connection reuse and shaping per destination.

Recipients an alias forwarded to another domain leave in a transaction of their own, with an SRS
envelope sender and an ARC seal of the alias's domain (:mod:`dovetail.outbound.forwarding`).

A message whose From domain has active DKIM keys leaves signed or not at all: when a key cannot be
loaded, every recipient is deferred (4.7.0, the reason in the log line) and no connection is made;
when the message itself cannot be signed, it is bounced (5.6.0, see ``_prepare``).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import re
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiosmtplib

from dovetail.log import get_logger
from dovetail.outbound.dane import TlsaAnswer, peer_chain, verify
from dovetail.outbound.dkim import DkimError, sign, split_message, to_crlf
from dovetail.outbound.events import DeliveryEvent, EventSink, relay_ids
from dovetail.outbound.forwarding import Forwarder, alias_domain
from dovetail.outbound.keys import DkimKeys, DkimKeyUnavailable
from dovetail.outbound.mx import LookupFailed, MxHost, MxResolver
from dovetail.outbound.shaping import Limits, Paused, RateLimited, Shaper, ShapingConfig
from dovetail.outbound.transports import Transport, Transports
from dovetail.queue.agent import DeliveryResult, DeliveryStatus
from dovetail.queue.envelope import QueueRecipient
from dovetail.queue.manager import QueueConfig
from dovetail.queue.qfile import QueuedMessage
from dovetail.sealing import is_sealed

log = get_logger("smtp")

_ENHANCED = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})\s+")
_CONNECTION_ERRORS = (OSError, aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPConnectError,
                      aiosmtplib.SMTPTimeoutError, aiosmtplib.SMTPConnectResponseError, aiosmtplib.SMTPHeloError,
                      TimeoutError, ssl.SSLError)


@dataclass
class AgentConfig:
    """Client knobs (Postfix names in brackets). ``mx_port`` is 25 in production; tests point it at
    a local server, since an MX record cannot carry a port."""

    hostname: str = "localhost"  # EHLO name [smtp_helo_name]
    mx_port: int = 25
    connect_timeout: float = 30.0  # [smtp_connect_timeout]
    command_timeout: float = 300.0  # [smtp_data_done_timeout]
    destination_concurrency: int = 20  # [default_destination_concurrency_limit], when ``shaping`` is None
    connection_cache_time: float = 2.0  # [smtp_connection_cache_time_limit]
    relay_tls_context: ssl.SSLContext | None = None  # verifying; the system CAs when None
    sts_tls_context: ssl.SSLContext | None = None  # verifying, for MTA-STS enforce
    # DANE (RFC 7672, :mod:`dovetail.outbound.dane`): TLSA records of MX hosts whose DNS answers the
    # validating resolver authenticated make verified TLS mandatory for them [smtp_tls_security_level = dane].
    dane: bool = False
    sign: bool = True
    shaping: ShapingConfig | None = None  # limits per destination; None: destination_concurrency alone
    # The queue manager's retry schedule, so a ``deferred`` event can say when the next try is.
    schedule: QueueConfig | None = None


class _Unsignable(Exception):
    """A message of a domain that signs which cannot be signed: its content is at fault (5.6.0)."""

    def __init__(self, reason: str, message_id: str | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.message_id = message_id


class _TlsFailure(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class _Tls:
    """How TLS is used with one MX host: opportunistic (``may``), verified by the CAs for MTA-STS
    ``enforce`` (``verify``), or matched against the host's TLSA records (``dane``)."""

    level: str
    tlsa: TlsaAnswer | None = None
    domain: str = ""

    @property
    def mandatory(self) -> bool:
        return self.level != "may"


@dataclass
class _Conn:
    smtp: aiosmtplib.SMTP
    key: tuple[object, ...]
    peer: str  # host[ip]:port
    tls: str | None
    last_used: float = field(default_factory=time.monotonic)
    reused: bool = False
    stage: str = "MAIL FROM"


@dataclass
class _Outcome:
    status: DeliveryStatus
    dsn: str
    reason: str
    reply: str = ""


def _dsn(code: int, text: str) -> str:
    m = _ENHANCED.match(text)
    if m and m.group(1)[0] == str(code)[0]:
        return m.group(1)
    return f"{code // 100}.0.0"


def _status(code: int) -> DeliveryStatus:
    return "sent" if 200 <= code < 300 else "bounced" if 500 <= code < 600 else "deferred"


def _said(peer: str, code: int, text: str, stage: str) -> str:
    host = peer.rsplit(":", 1)[0]
    return f"host {host} said: {code} {' '.join(text.split())} (in reply to {stage} command)"


def _message_id_and_from(data: bytes) -> tuple[str | None, str | None]:
    try:
        fields, _ = split_message(data)
    except DkimError:
        return None, None
    mid = from_domain = None
    for name, raw in fields:
        if name == b"message-id" and mid is None:
            mid = raw.split(b":", 1)[1].decode("utf-8", "replace").strip()
        elif name == b"from" and from_domain is None:
            value = raw.split(b":", 1)[1].decode("utf-8", "replace")
            addrs = [a for _, a in email.utils.getaddresses([value]) if "@" in a]
            if addrs:
                from_domain = addrs[0].rpartition("@")[2].lower()
    return mid, from_domain


_Batch = tuple[str, bytes, list[QueueRecipient]]  # envelope sender, message bytes, recipients


class OutboundAgent:
    """``DeliveryAgent`` for mail leaving us. Call ``close()`` at shutdown to end cached sessions."""

    def __init__(self, transports: Transports, keys: DkimKeys | None, config: AgentConfig | None = None, *,
                 mx: MxResolver | None = None, events: EventSink | None = None,
                 forwarder: Forwarder | None = None) -> None:
        self.transports = transports
        self.forwarder = forwarder  # SRS + ARC for recipients an alias forwarded; None: sent as they are
        self.keys = keys
        self.config = config or AgentConfig()
        self.mx = mx or MxResolver()
        self.events = events
        self._idle: dict[tuple[object, ...], list[_Conn]] = {}
        self.shaper = Shaper(self.config.shaping or ShapingConfig(concurrency=self.config.destination_concurrency))
        self._reaper: asyncio.TimerHandle | None = None
        self.connections_made = 0
        self.connections_reused = 0

    # --- the DeliveryAgent entry point ---------------------------------------------------------

    async def deliver(self, message: QueuedMessage, recipients: list[QueueRecipient]) -> list[DeliveryResult]:
        env = message.envelope
        tenant = env.extra.get("tenant")
        # A VERP return path (bounce+<token>@) is not who sends: sender rules match the author the
        # send API kept in the envelope.
        routes = await asyncio.to_thread(self.transports.for_recipients, env.extra.get("sender") or env.sender,
                                         [r.address for r in recipients], tenant)
        outcomes: dict[int, tuple[_Outcome, str | None]] = {}
        relay_info: dict[int, tuple[str | None, str | None]] = {}
        try:
            data, message_id = await asyncio.to_thread(self._prepare, message)
        except DkimKeyUnavailable as exc:  # never unsigned: the mail waits for its key
            message_id = _message_id_and_from(to_crlf(message.read_message()))[0]
            self._all(recipients, _Outcome("deferred", "4.7.0", str(exc)), None, outcomes)
        except _Unsignable as exc:  # never unsigned: a message that cannot be signed goes back to its sender
            message_id = exc.message_id
            self._all(recipients, _Outcome("bounced", "5.6.0", exc.reason), None, outcomes)
        else:
            route_of = {rcpt.index: route.transport for rcpt, route in zip(recipients, routes, strict=True)}
            batches = await self._batches(message.queue_id, env.sender, data, recipients, outcomes)
            await asyncio.gather(*(self._dispatch(message.queue_id, sender, body, rcpts, route_of, outcomes,
                                                  relay_info)
                                   for sender, body, rcpts in batches))
        results = []
        events = []
        attempt = env.attempts + 1
        now = time.time()
        schedule = self.config.schedule
        next_try = schedule.next_attempt(env, attempt, now) if schedule is not None else None
        contact = env.extra.get("contact")
        for rcpt in recipients:
            outcome, peer = outcomes.get(rcpt.index) or (_Outcome("deferred", "4.3.0", "no outcome"), None)
            results.append(DeliveryResult(rcpt, outcome.status, outcome.dsn, outcome.reason, peer))
            rq, pmid = relay_info.get(rcpt.index, (None, None))
            kind = {"sent": "delivered", "deferred": "deferred", "bounced": "bounced"}[outcome.status]
            events.append(DeliveryEvent(kind, message.queue_id, rcpt.address, env.sender, message_id, outcome.dsn,
                                        outcome.reason, peer, rq, pmid, tenant, env.extra.get("campaign"),
                                        attempt=attempt, next_attempt=next_try if kind == "deferred" else None,
                                        contact=contact))
        if self.events is not None:
            try:
                await asyncio.to_thread(self.events.outbound_events, events)
            except Exception as exc:  # a consumer's trouble must not undo a delivery
                log.warning(f"delivery event sink failed: {exc}", qid=message.queue_id)
        return results

    async def _batches(self, qid: str, sender: str, data: bytes, recipients: list[QueueRecipient],
                       outcomes: dict[int, tuple[_Outcome, str | None]]) -> list[_Batch]:
        """(envelope sender, message, recipients) per way the message leaves: as it is for recipients
        named by the client, and per alias domain with an SRS sender and an ARC seal for recipients an
        alias forwarded (``original`` is the alias). A forwarding domain whose key cannot be loaded
        defers its recipients (4.7.0), as signing does."""
        direct: list[QueueRecipient] = []
        by_alias: dict[str, list[QueueRecipient]] = {}
        for rcpt in recipients:
            if self.forwarder is not None and rcpt.original and rcpt.original.lower() != rcpt.address.lower():
                by_alias.setdefault(alias_domain(rcpt.original), []).append(rcpt)
            else:
                direct.append(rcpt)
        batches = [(sender, data, direct)] if direct else []
        for domain, rcpts in by_alias.items():
            assert self.forwarder is not None
            try:
                fwd = await self.forwarder.prepare(qid, sender, data, domain)
            except DkimKeyUnavailable as exc:
                self._all(rcpts, _Outcome("deferred", "4.7.0", str(exc)), None, outcomes)
                continue
            if fwd.sender != sender or fwd.sealed_by:
                log.info(f"forwarded by {domain}: sender=<{fwd.sender}>"
                         + (f", arc-sealed (d={fwd.sealed_by})" if fwd.sealed_by else ""), qid=qid)
            batches.append((fwd.sender, fwd.data, rcpts))
        return batches

    async def _dispatch(self, qid: str, sender: str, data: bytes, recipients: list[QueueRecipient],
                        route_of: dict[int, Transport], outcomes: dict[int, tuple[_Outcome, str | None]],
                        relay_info: dict[int, tuple[str | None, str | None]]) -> None:
        """One relay session per way out (recipients whose rules name the same relay share it), one MX
        session per recipient domain, all in parallel."""
        relays: dict[tuple[object, ...], tuple[Transport, list[QueueRecipient]]] = {}
        by_domain: dict[tuple[str, str | None], list[QueueRecipient]] = {}
        for rcpt in recipients:
            transport = route_of[rcpt.index]
            if transport.kind == "relay":
                relays.setdefault(transport.session_key, (transport, []))[1].append(rcpt)
            else:
                domain = rcpt.address.rpartition("@")[2].lower()
                by_domain.setdefault((domain, transport.bind_address), []).append(rcpt)
        await asyncio.gather(
            *(self._via_relay(qid, transport, sender, rcpts, data, outcomes, relay_info)
              for transport, rcpts in relays.values()),
            *(self._via_mx(qid, dom, sender, rcpts, data, outcomes, bind)
              for (dom, bind), rcpts in by_domain.items()))

    async def _send(self, qid: str, transport: Transport, sender: str, recipients: list[QueueRecipient],
                    data: bytes, outcomes: dict[int, tuple[_Outcome, str | None]],
                    relay_info: dict[int, tuple[str | None, str | None]]) -> None:
        if transport.kind == "relay":
            await self._via_relay(qid, transport, sender, recipients, data, outcomes, relay_info)
            return
        by_domain: dict[str, list[QueueRecipient]] = {}
        for rcpt in recipients:
            by_domain.setdefault(rcpt.address.rpartition("@")[2].lower(), []).append(rcpt)
        await asyncio.gather(*(self._via_mx(qid, dom, sender, rcpts, data, outcomes, transport.bind_address)
                               for dom, rcpts in by_domain.items()))

    def _prepare(self, message: QueuedMessage) -> tuple[bytes, str | None]:
        """The message as it goes on the wire (CRLF), with DKIM-Signature headers when we hold keys.

        ``DkimKeyUnavailable`` when the From domain has a key that cannot be loaded (the mail waits).
        ``_Unsignable`` (bounced 5.6.0) when it has active keys and the message cannot be signed.

        A message without a From: we can read (a header section that does not split into fields, no
        From:, no address in it) names no signing domain. It is judged by the envelope sender's domain
        instead: when that domain signs, the message is bounced 5.6.0 rather than sent unsigned. Signing
        it with the sender's key is not possible (a DKIM signature covers From:, RFC 6376 §5.4) nor
        useful (DMARC aligns on the From: domain), sending it unsigned would break the domain's promise
        that its mail is signed, and waiting changes nothing: the content is at fault, so the sender
        learns it now. A message whose envelope sender's domain does not sign (a null sender, a
        forwarded message from elsewhere) still goes as it came.
        """
        data = to_crlf(message.read_message())
        mid, from_domain = _message_id_and_from(data)
        if not self.config.sign or self.keys is None:
            return data, mid
        if from_domain:
            keys = self.keys.signing_keys(from_domain)
            if keys:
                try:
                    data = sign(data, keys) + data
                except DkimError as exc:
                    raise _Unsignable(f"message of {from_domain} cannot be DKIM-signed: {exc}", mid) from None
            return data, mid
        sender_domain = message.envelope.sender.rpartition("@")[2].lower()
        if sender_domain and self.keys.signing_keys(sender_domain):
            raise _Unsignable(f"message has no readable From: header, so it cannot be DKIM-signed for "
                              f"{sender_domain}", mid)
        return data, mid

    # --- relay ---------------------------------------------------------------------------------

    async def _via_relay(self, qid: str, transport: Transport, sender: str, rcpts: list[QueueRecipient],
                         data: bytes, outcomes: dict[int, tuple[_Outcome, str | None]],
                         relay_info: dict[int, tuple[str | None, str | None]]) -> None:
        host, port = transport.host or "", int(transport.port or 587)
        destination, limits = self.shaper.config.for_relay(host, port)
        try:
            async with self.shaper.session(destination, limits):
                await self._relay_attempt(qid, transport, sender, rcpts, data, outcomes, relay_info)
        except (Paused, RateLimited) as exc:
            self._all(rcpts, _shaped(exc), None, outcomes)
        self._settle(destination, rcpts, outcomes)

    async def _relay_attempt(self, qid: str, transport: Transport, sender: str, rcpts: list[QueueRecipient],
                             data: bytes, outcomes: dict[int, tuple[_Outcome, str | None]],
                             relay_info: dict[int, tuple[str | None, str | None]]) -> None:
        host, port = transport.host or "", int(transport.port or 587)
        key = ("relay", host, port, transport.tls, transport.username, transport.bind_address)
        try:
            conn = await self._session(key, lambda: self._connect_relay(qid, transport))
        except aiosmtplib.SMTPConnectResponseError as exc:  # a greeting such as 421: throttled or busy
            reason = _said(f"{host}[{host}]:{port}", exc.code, exc.message, "initial")
            self._all(rcpts, _Outcome("deferred", _dsn(exc.code, exc.message) if exc.code < 500 else "4.0.0",
                                      reason), f"{host}:{port}", outcomes)
            return
        except _TlsFailure as exc:
            self._all(rcpts, _Outcome("deferred", "4.7.5", exc.reason), f"{host}[{host}]:{port}", outcomes)
            return
        except aiosmtplib.SMTPAuthenticationError as exc:
            reason = f"SASL authentication failed; server {host} said: {exc.code} {exc.message}"
            self._all(rcpts, _Outcome("deferred", "4.7.0", reason), f"{host}:{port}", outcomes)
            return
        except _CONNECTION_ERRORS as exc:
            reason = f"connect to {host}[{host}]:{port}: {_err(exc)}"
            self._all(rcpts, _Outcome("deferred", "4.4.1", reason), f"{host}:{port}", outcomes)
            return
        got = await self._transaction(conn, sender, rcpts, data, lambda: self._connect_relay(qid, transport))
        for rcpt in rcpts:
            outcome = got.get(rcpt.index)
            if outcome is None:
                continue
            outcomes[rcpt.index] = (outcome, conn.peer)
            if outcome.status == "sent":
                relay_info[rcpt.index] = relay_ids(outcome.reply, transport.ses_region)

    async def _connect_relay(self, qid: str, transport: Transport) -> _Conn:
        cfg = self.config
        host, port = transport.host or "", int(transport.port or 587)
        # No context for a plaintext relay: loading the system CAs costs milliseconds per connection.
        ctx = None if transport.tls == "none" else cfg.relay_tls_context or ssl.create_default_context()
        implicit = transport.tls == "implicit"
        smtp = aiosmtplib.SMTP(hostname=host, port=port, local_hostname=cfg.hostname, timeout=cfg.connect_timeout,
                               use_tls=implicit, start_tls=False, tls_context=ctx if implicit else None,
                               source_address=_source(transport.bind_address))
        await smtp.connect()
        try:
            if transport.tls == "starttls":
                await smtp.ehlo()
                if not smtp.supports_extension("starttls"):
                    raise _TlsFailure(f"TLS is required, but was not offered by host {host}")
                await smtp.starttls(server_hostname=host, tls_context=ctx)
            if transport.username:
                await smtp.ehlo()
                if not smtp.supports_extension("auth"):
                    raise _TlsFailure(f"SASL authentication is required, but AUTH was not offered by host {host}")
                if is_sealed(transport.secret):
                    raise _TlsFailure("the relay secret is sealed with another key than this data directory's")
                await smtp.login(transport.username, transport.secret or "")
        except BaseException:
            smtp.close()
            raise
        return self._wrap(qid, smtp, ("relay", host, port, transport.tls, transport.username, transport.bind_address),
                          host, port, verified=transport.tls != "none")

    # --- direct MX -----------------------------------------------------------------------------

    async def _via_mx(self, qid: str, domain: str, sender: str, rcpts: list[QueueRecipient], data: bytes,
                      outcomes: dict[int, tuple[_Outcome, str | None]], bind: str | None = None) -> None:
        try:
            hosts = await self.mx.mx_hosts(domain)
        except LookupFailed as exc:
            self._all(rcpts, _Outcome("bounced" if exc.permanent else "deferred", exc.dsn, exc.reason), None,
                      outcomes)
            self._settle(self.shaper.config.destination(domain)[0], rcpts, outcomes)
            return
        destination, limits = self.shaper.config.destination(domain, [h.name for h in hosts])
        try:
            await self._mx_attempt(qid, domain, hosts, sender, rcpts, data, outcomes, bind, destination, limits)
        except (Paused, RateLimited) as exc:
            self._all(rcpts, _shaped(exc), None, outcomes)
        self._settle(destination, rcpts, outcomes)

    async def _mx_attempt(self, qid: str, domain: str, hosts: list[MxHost], sender: str, rcpts: list[QueueRecipient],
                          data: bytes, outcomes: dict[int, tuple[_Outcome, str | None]], bind: str | None,
                          destination: str, limits: Limits) -> None:
        dane = await self._dane_lookups(domain, hosts) if self.config.dane else {}
        # RFC 8461 §2: where DANE applies, the MTA-STS policy does not
        policy = None if any(a.usable for a in dane.values()) else await self.mx.sts_policy(domain)
        enforce = policy is not None and policy.mode == "enforce"
        if enforce:
            assert policy is not None
            allowed = [h for h in hosts if policy.allows(h.name)]
            if not allowed:
                self._all(rcpts, _Outcome("deferred", "4.7.5", f"MTA-STS policy of {domain} lists none of its MX "
                                                                 "hosts"), None, outcomes)
                return
            hosts = allowed
        port = self.config.mx_port
        last = _Outcome("deferred", "4.4.1", f"no usable MX host for {domain}")
        last_peer: str | None = None
        async with self.shaper.session(destination, limits):
            for host in hosts:
                tlsa = dane.get(host.name)
                if tlsa is not None and tlsa.error:  # RFC 7672 §2.2: a secure host whose TLSA cannot be had is skipped
                    last = _Outcome("deferred", "4.7.5", f"DANE: TLSA lookup error for {tlsa.name}: {tlsa.error}")
                    last_peer = f"{host.name}[{host.addresses[0]}]:{port}"
                    log.info(f"dane=failed {host.name}: {last.reason}", qid=qid)
                    self.shaper.dane_counts["failed"] += 1
                    continue
                if tlsa is not None and tlsa.usable:
                    tls = _Tls("dane", tlsa, domain)
                else:
                    tls = _Tls("verify" if enforce else "may")
                for ip in host.addresses:
                    key = ("mx", ip, port, enforce, bind) if tls.level != "dane" else ("mx", ip, port, "dane",
                                                                                        host.name, domain, bind)
                    connect = functools.partial(self._connect_mx, qid, host, ip, tls, bind, key)
                    try:
                        conn = await self._session(key, connect)
                    except _TlsFailure as exc:
                        last, last_peer = _Outcome("deferred", "4.7.5", exc.reason), f"{host.name}[{ip}]:{port}"
                        if tls.level == "dane":
                            log.info(f"dane=failed {exc.reason}", qid=qid)
                            self.shaper.dane_counts["failed"] += 1
                        continue
                    except aiosmtplib.SMTPResponseException as exc:
                        last = _Outcome("deferred", _dsn(exc.code, exc.message) if exc.code < 500 else "4.0.0",
                                        _said(f"{host.name}[{ip}]:{port}", exc.code, exc.message, "initial"))
                        last_peer = f"{host.name}[{ip}]:{port}"
                        continue
                    except _CONNECTION_ERRORS as exc:
                        last = _Outcome("deferred", "4.4.1", f"connect to {host.name}[{ip}]:{port}: {_err(exc)}")
                        last_peer = f"{host.name}[{ip}]:{port}"
                        continue
                    got = await self._transaction(conn, sender, rcpts, data, connect)
                    for rcpt in rcpts:
                        if rcpt.index in got:
                            outcomes[rcpt.index] = (got[rcpt.index], conn.peer)
                    return
        self._all(rcpts, last, last_peer, outcomes)

    async def _dane_lookups(self, domain: str, hosts: list[MxHost]) -> dict[str, TlsaAnswer]:
        """TLSA answers of the MX hosts whose MX and address records are secure (RFC 7672 §2.2)."""
        secure = [h for h in hosts if h.secure]
        answers = await asyncio.gather(*(self.mx.tlsa(h.name, self.config.mx_port) for h in secure))
        return {h.name: a for h, a in zip(secure, answers, strict=True)}

    async def _connect_mx(self, qid: str, host: MxHost, ip: str, tls: _Tls, bind: str | None = None,
                          key: tuple[object, ...] | None = None) -> _Conn:
        cfg = self.config
        port = cfg.mx_port
        verify = tls.mandatory
        smtp = await self._open_mx(ip, bind)
        note = ""
        try:
            if smtp.supports_extension("starttls"):
                if tls.level == "verify":
                    ctx = cfg.sts_tls_context or ssl.create_default_context()
                else:
                    ctx = ssl.create_default_context()
                    ctx.check_hostname = False
                    ctx.verify_mode = ssl.CERT_NONE
                try:
                    await smtp.starttls(server_hostname=host.name, tls_context=ctx)
                except (ssl.SSLError, aiosmtplib.SMTPException, *_CONNECTION_ERRORS) as exc:
                    reason = f"TLS handshake with {host.name}[{ip}]:{port} failed: {_err(exc)}"
                    if tls.level == "dane":
                        raise _TlsFailure(f"DANE: {reason}") from None
                    if verify:
                        raise _TlsFailure(reason) from None
                    # Opportunistic TLS: a broken TLS stack on the far side must not stop the mail.
                    log.info(f"{reason}; trying again in plaintext", qid=qid)
                    smtp.close()
                    smtp = await self._open_mx(ip, bind)
            elif tls.level == "dane":
                raise _TlsFailure(f"DANE: TLS is required by the TLSA records of {host.name}, but was not "
                                  f"offered by host {host.name}[{ip}]:{port}")
            elif verify:
                raise _TlsFailure(f"MTA-STS: TLS is required, but was not offered by host {host.name}[{ip}]")
            if tls.level == "dane":
                note = self._dane_check(host, ip, tls, smtp)
            elif cfg.dane:
                note = "dane=none"
                self.shaper.dane_counts["none"] += 1
        except BaseException:
            smtp.close()
            raise
        return self._wrap(qid, smtp, key or ("mx", ip, port, verify, bind), host.name, port, verified=verify,
                          note=note)

    def _dane_check(self, host: MxHost, ip: str, tls: _Tls, smtp: aiosmtplib.SMTP) -> str:
        """Match the certificate chain the host presented against its TLSA records (after the
        handshake, which accepted any certificate); raises ``_TlsFailure`` when none matches."""
        assert tls.tlsa is not None
        transport = smtp.transport
        sslobj = transport.get_extra_info("ssl_object") if transport else None
        chain = peer_chain(sslobj) if sslobj is not None else []
        verdict = verify(chain, tls.tlsa.usable, [host.name, tls.domain])
        if not verdict.ok:
            records = ", ".join(str(r) for r in tls.tlsa.usable)
            raise _TlsFailure(f"DANE: certificate of {host.name}[{ip}]:{self.config.mx_port} does not match "
                              f"TLSA records of {tls.tlsa.name} ({records}): {verdict.reason}")
        self.shaper.dane_counts["verified"] += 1
        return f"dane=verified ({verdict.reason} {verdict.record})"

    async def _open_mx(self, ip: str, bind: str | None = None) -> aiosmtplib.SMTP:
        """A plaintext session with the MX at ``ip`` (from ``bind`` when given), greeted and EHLO said."""
        cfg = self.config
        smtp = aiosmtplib.SMTP(hostname=ip, port=cfg.mx_port, local_hostname=cfg.hostname,
                               timeout=cfg.connect_timeout, start_tls=False, source_address=_source(bind))
        await smtp.connect()
        try:
            await smtp.ehlo()
        except BaseException:
            smtp.close()
            raise
        return smtp

    # --- sessions ------------------------------------------------------------------------------

    def _settle(self, destination: str, rcpts: Sequence[QueueRecipient],
                outcomes: dict[int, tuple[_Outcome, str | None]]) -> None:
        """Count the destination's outcomes; a throttling reply pauses it, a delivery ends a pause."""
        throttle = None
        sent = False
        for rcpt in rcpts:
            outcome = outcomes.get(rcpt.index, (None, None))[0]
            if outcome is None:
                continue
            self.shaper.count(destination, _COUNTED[outcome.status])
            sent = sent or outcome.status == "sent"
            if throttle is None and _throttling(outcome):
                throttle = outcome.reason
        if throttle is not None:
            self.shaper.throttled(destination, throttle)
        elif sent:
            self.shaper.succeeded(destination)

    def _wrap(self, qid: str, smtp: aiosmtplib.SMTP, key: tuple[object, ...], name: str, port: int,
              verified: bool, note: str = "") -> _Conn:
        transport = smtp.transport
        peername = transport.get_extra_info("peername") if transport else None
        ip = peername[0] if peername else name
        peer = f"{name}[{ip}]:{port}"
        sslobj = transport.get_extra_info("ssl_object") if transport else None
        tls = None
        if sslobj is not None:
            tls = f"{sslobj.version()} with cipher {sslobj.cipher()[0]}"
            trust = "Verified" if verified else "Untrusted"
            log.info(f"{trust} TLS connection established to {peer}: {tls}" + (f", {note}" if note else ""),
                     qid=qid)
        elif note:
            log.info(f"connection established to {peer} without TLS, {note}", qid=qid)
        self.connections_made += 1
        return _Conn(smtp, key, peer, tls)

    async def _session(self, key: tuple[object, ...], connect) -> _Conn:  # noqa: ANN001
        """A cached idle session for ``key`` when one is fresh, else a new one from ``connect()``."""
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if now - conn.last_used <= self.config.connection_cache_time and conn.smtp.is_connected:
                conn.reused = True
                self.connections_reused += 1
                return conn
            _drop(conn)
        return await asyncio.wait_for(connect(), self.config.connect_timeout)

    def _release(self, conn: _Conn) -> None:
        if not conn.smtp.is_connected:
            return
        conn.last_used = time.monotonic()
        self._idle.setdefault(conn.key, []).append(conn)
        if self._reaper is None:  # one timer for all idle sessions, not one per message
            self._reaper = asyncio.get_running_loop().call_later(self.config.connection_cache_time + 0.05,
                                                                 self._reap)

    def _reap(self) -> None:
        self._reaper = None
        now = time.monotonic()
        for key, conns in list(self._idle.items()):
            keep = [c for c in conns if now - c.last_used <= self.config.connection_cache_time]
            if len(keep) < len(conns):
                for conn in conns:
                    if now - conn.last_used > self.config.connection_cache_time:
                        _drop(conn)
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]
        if self._idle:
            oldest = min(c.last_used for cs in self._idle.values() for c in cs)
            delay = max(0.0, oldest + self.config.connection_cache_time - now) + 0.05
            self._reaper = asyncio.get_running_loop().call_later(delay, self._reap)

    async def close(self) -> None:
        conns = [c for cs in self._idle.values() for c in cs]
        self._idle.clear()
        for conn in conns:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.smtp.quit(), 2)
            conn.smtp.close()

    # --- one SMTP transaction ------------------------------------------------------------------

    async def _transaction(self, conn: _Conn, sender: str, rcpts: Sequence[QueueRecipient], data: bytes,
                           reconnect) -> dict[int, _Outcome]:  # noqa: ANN001
        """MAIL, RCPT each, DATA; per-recipient outcomes.

        A cached session the server closed while idle fails at MAIL FROM; it is replaced once by a
        fresh one. Failures later in the transaction are not retried here (that could send twice).
        """
        try:
            got = await self._exchange(conn, sender, rcpts, data)
        except _CONNECTION_ERRORS as exc:
            conn.smtp.close()
            if conn.reused and conn.stage == "MAIL FROM":
                try:
                    fresh = await asyncio.wait_for(reconnect(), self.config.connect_timeout)
                except (_TlsFailure, aiosmtplib.SMTPException, *_CONNECTION_ERRORS) as exc2:
                    reason = f"connect to {conn.peer}: {_err(exc2)}"
                    return {r.index: _Outcome("deferred", "4.4.1", reason) for r in rcpts}
                return await self._transaction(fresh, sender, rcpts, data, reconnect)
            reason = f"lost connection with {conn.peer.rsplit(':', 1)[0]} while sending message: {_err(exc)}"
            return {r.index: _Outcome("deferred", "4.4.2", reason) for r in rcpts}
        self._release(conn)
        return got

    async def _exchange(self, conn: _Conn, sender: str, rcpts: Sequence[QueueRecipient],
                        data: bytes) -> dict[int, _Outcome]:
        smtp = conn.smtp
        timeout = self.config.command_timeout
        out: dict[int, _Outcome] = {}
        utf8 = not sender.isascii() or any(not r.address.isascii() for r in rcpts)
        options = ["SMTPUTF8"] if utf8 and smtp.supports_extension("smtputf8") else []
        encoding = "utf-8" if options else "ascii"
        if utf8 and not options:
            reason = f"host {conn.peer.rsplit(':', 1)[0]} does not support SMTPUTF8"
            return {r.index: _Outcome("bounced", "5.6.7", reason) for r in rcpts}
        conn.stage = "MAIL FROM"
        try:
            await _mail(smtp, sender, options, encoding, timeout)
        except aiosmtplib.SMTPSenderRefused as exc:
            return self._refused_all(conn, rcpts, exc.code, exc.message, "MAIL FROM")
        conn.stage = "RCPT TO"
        accepted = []
        for rcpt in rcpts:
            try:
                await _rcpt(smtp, rcpt.address, encoding, timeout)
                conn.stage = "DATA"
                accepted.append(rcpt)
            except aiosmtplib.SMTPRecipientRefused as exc:
                out[rcpt.index] = _Outcome(_status(exc.code) if exc.code >= 400 else "deferred",
                                           _dsn(exc.code, exc.message),
                                           _said(conn.peer, exc.code, exc.message, "RCPT TO"))
                if exc.code == 421:  # the server is closing: the others wait for the same reason
                    for other in rcpts:
                        out.setdefault(other.index, out[rcpt.index])
                    return out
        if not accepted:
            await smtp.rset(timeout=timeout)
            return out
        try:
            resp = await smtp.data(data, timeout=timeout)
        except aiosmtplib.SMTPDataError as exc:
            for rcpt in accepted:
                out[rcpt.index] = _Outcome(_status(exc.code) if exc.code >= 400 else "deferred",
                                           _dsn(exc.code, exc.message),
                                           _said(conn.peer, exc.code, exc.message, "end of DATA"))
            return out
        text = " ".join(resp.message.split())
        for rcpt in accepted:
            out[rcpt.index] = _Outcome("sent", _dsn(resp.code, text), f"{resp.code} {text}", text)
        return out

    def _refused_all(self, conn: _Conn, rcpts: Sequence[QueueRecipient], code: int, text: str,
                     stage: str) -> dict[int, _Outcome]:
        status: DeliveryStatus = _status(code) if code >= 400 else "deferred"
        outcome = _Outcome(status, _dsn(code, text), _said(conn.peer, code, text, stage))
        return {r.index: outcome for r in rcpts}

    @staticmethod
    def _all(rcpts: Sequence[QueueRecipient], outcome: _Outcome, peer: str | None,
             outcomes: dict[int, tuple[_Outcome, str | None]]) -> None:
        for rcpt in rcpts:
            outcomes[rcpt.index] = (outcome, peer)


_SAID_CODE = re.compile(r" said: (\d{3})[ -]")
_COUNTED = {"sent": "delivered", "deferred": "deferred", "bounced": "bounced"}


def _throttling(outcome: _Outcome) -> bool:
    """A temporary reply of the destination that means "slow down": 421 (closing, too many
    connections or messages) or an enhanced 4.7.x status (Gmail's 4.7.28, SES's 454 4.7.0)."""
    said = _SAID_CODE.search(outcome.reason)
    if outcome.status != "deferred" or said is None or not said.group(1).startswith("4"):
        return False  # our own 4.7.x (TLS required, a key missing) or a refused login is not throttling
    return said.group(1) == "421" or outcome.dsn.startswith("4.7.")


def _shaped(exc: Paused | RateLimited) -> _Outcome:
    if isinstance(exc, Paused):
        return _Outcome("deferred", "4.4.5", str(exc))
    return _Outcome("deferred", "4.7.0", str(exc))


def _source(bind: str | None) -> tuple[str, int] | None:
    return (bind, 0) if bind else None


def _err(exc: BaseException) -> str:
    text = str(exc) or exc.__class__.__name__
    cause = exc.__cause__ or exc.__context__
    if isinstance(exc, ConnectionRefusedError) or isinstance(cause, ConnectionRefusedError) \
            or "Errno 111" in text:
        return "Connection refused"
    if isinstance(exc, TimeoutError | aiosmtplib.SMTPTimeoutError):
        return "Connection timed out"
    return " ".join(text.split())


async def _mail(smtp: aiosmtplib.SMTP, sender: str, options: list[str], encoding: str,
                wait: float) -> None:
    """``smtp.mail`` without its address re-parsing (``email.utils.parseaddr``, a good part of the CPU
    a message costs here): the envelope address was checked when the message was queued and goes as
    it is, as Postfix sends it. Same replies and exceptions."""
    if smtp.is_ehlo_or_helo_needed:
        await smtp.mail(sender, options=options, encoding=encoding, timeout=wait)
        return
    resp = await smtp.execute_command(b"MAIL", b"FROM:<" + sender.encode(encoding) + b">",
                                      *(o.encode("ascii") for o in options), timeout=wait)
    if resp.code != 250:
        raise aiosmtplib.SMTPSenderRefused(resp.code, resp.message, sender)


async def _rcpt(smtp: aiosmtplib.SMTP, recipient: str, encoding: str, wait: float) -> None:
    """``smtp.rcpt`` without the address re-parsing (see ``_mail``)."""
    resp = await smtp.execute_command(b"RCPT", b"TO:<" + recipient.encode(encoding) + b">", timeout=wait)
    if resp.code not in (250, 251):
        raise aiosmtplib.SMTPRecipientRefused(resp.code, resp.message, recipient)


def _drop(conn: _Conn) -> None:
    with contextlib.suppress(Exception):
        conn.smtp.close()
