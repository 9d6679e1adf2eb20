"""asyncio adapter for the SMTP core: sockets, TLS, timeouts, connection limits and the backend calls.

A backend may offer ``check_connect(session)``, awaited before the banner: a reply instead of ``220``
refuses the connection (the MX's connection rate limit). Past ``soft_error_limit`` errors each error
reply waits ``error_sleep`` (Postfix's tarpit; a timer, never a blocked loop); at ``max_errors`` the core
answers ``421 4.7.0`` and the session ends.

With ``lmtp=True`` it serves LMTP (RFC 2033) on the same core: the end of the data is answered once per
recipient, from the sink's ``commit_each`` (:class:`dovetail.smtp.backend.RecipientSink`).

Built on ``asyncio.Protocol`` (not streams) because it avoids a StreamReader copy per read and runs
fastest under uvloop, which is used when the caller installs it. One task per connection drives the
sans-I/O core; reading pauses while unparsed input piles up behind a slow backend write or commit.

A listener may have a screening stage (:mod:`dovetail.smtp.screening`) that runs before the session,
and a stress mode (Postfix's): past a share of the connection cap, idle timeouts and the error limit
shrink, and at the cap a new connection takes the slot of the oldest one that has not sent MAIL FROM
(idle connections are what a flood holds; a client that is sending mail is left alone).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import ssl
from collections import Counter
from collections.abc import Callable
from typing import cast

from dovetail.log import flush as flush_log
from dovetail.log import get_logger
from dovetail.mailauth.networks import client_network
from dovetail.smtp import events as ev
from dovetail.smtp.backend import Backend, Envelope, EnvelopeRecipient, MessageSink, RecipientSink, SessionInfo
from dovetail.smtp.limits import Limits
from dovetail.smtp.protocol import SmtpConnection, State
from dovetail.smtp.received import received_header
from dovetail.smtp.reply import Reply
from dovetail.smtp.screening import Refusal, Screen

log = get_logger("smtpd")

TEMP_FAIL = Reply(451, "4.3.0", "Error: temporary failure")
QUEUE_FAIL = Reply(451, "4.3.0", "Error: queue file write error")
# The queue's disk (or disk quota) is full: "insufficient system storage" (RFC 5321 452, RFC 3463 4.3.1).
QUEUE_FULL = Reply(452, "4.3.1", "Error: insufficient system storage")


def _queue_fail(exc: BaseException) -> Reply:
    """The reply to a message the queue could not take."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return QUEUE_FULL
    return QUEUE_FAIL
DRAIN_IDLE = 2.0  # seconds a session between transactions may still start one after stop()
EVICT_MIN_AGE = 1.0  # a connection idle for less than this is not closed to make room (a client gets a chance)
EARLY_INPUT_MAX = 4096  # octets kept from a client that talks during screening; reading pauses beyond
REFUSE_WAIT = 10.0  # a refused client's first command is awaited this long (2 s under stress)


class SmtpServer:
    """An SMTP listener: ``await start(sock=...)`` on a socket bound by the master, ``await stop(grace)``."""

    def __init__(
        self,
        backend: Backend,
        limits: Limits | None = None,
        hostname: str = "localhost",
        ssl_context: ssl.SSLContext | None = None,
        implicit_tls: bool = False,
        *,
        listener: str = "mx",
        auth: bool = False,
        auth_plaintext: bool | Callable[[str], bool] = False,
        screen: Screen | None = None,
        lmtp: bool = False,
        admit: Callable[[str], Reply | None] | None = None,
    ) -> None:
        """``admit(client_ip)`` may refuse a connection with a reply before the greeting (a client outside
        the networks a listener serves); ``lmtp`` speaks LMTP instead of SMTP."""
        if implicit_tls and ssl_context is None:
            raise ValueError("implicit_tls needs an ssl_context")
        self.lmtp = lmtp
        self.admit = admit
        self.backend = backend
        self.limits = limits or Limits()
        self.hostname = hostname
        self.ssl_context = ssl_context
        self.implicit_tls = implicit_tls
        self.listener = listener
        self.auth = auth
        self.auth_plaintext = auth_plaintext
        self.screen = screen
        self.connections_total = 0
        self.connections_refused = 0
        self.messages_accepted = 0
        self._server: asyncio.Server | None = None
        self._port = 0
        self._sessions: set[_Session] = set()
        self._per_ip: Counter[str] = Counter()
        self._per_net: Counter[str] = Counter()
        self._idle: dict[_Session, float] = {}  # sessions outside a transaction, longest idle first
        self.stressed = False
        self.evicted = 0  # connections closed under stress to make room
        self.stopping = False
        self.stop_started = 0.0

    @property
    def active_connections(self) -> int:
        return len(self._sessions)

    @property
    def reading_paused(self) -> int:
        """Sessions whose socket reads are paused because input piled up behind the backend."""
        return sum(1 for s in self._sessions if s.paused)

    def longest_idle(self) -> float:
        """Seconds the session first in line to be closed under stress has been outside a transaction."""
        if not self._idle:
            return 0.0
        return asyncio.get_running_loop().time() - next(iter(self._idle.values()))

    def buffered(self) -> int:
        """Octets received and not yet parsed, over all sessions."""
        return sum(s.conn.buffered for s in self._sessions if s.conn is not None)

    @property
    def sockets(self) -> list[socket.socket]:
        return list(self._server.sockets) if self._server else []

    @property
    def port(self) -> int:
        """The listening port (kept after ``stop`` closes the socket)."""
        return self._port

    async def start(self, sock: socket.socket | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        """Serve on ``sock`` (bound and listening, maybe shared with sibling workers) or host/port."""
        loop = asyncio.get_running_loop()
        kwargs: dict = {}
        if self.implicit_tls:
            kwargs = {"ssl": self.ssl_context, "ssl_handshake_timeout": self.limits.tls_handshake_timeout}
        if sock is not None:
            self._server = await loop.create_server(lambda: _Session(self), sock=sock, **kwargs)
        else:
            self._server = await loop.create_server(lambda: _Session(self), host, port, **kwargs)
        name = self._server.sockets[0].getsockname()
        self._port = name[1] if isinstance(name, tuple) else 0  # a unix socket has a path, no port

    async def stop(self, grace: float = 30.0) -> None:
        """Stop accepting; idle sessions get 421 now, transactions in flight get ``grace`` seconds."""
        self.stopping = True
        self.stop_started = asyncio.get_running_loop().time()
        if self._server is not None:
            self._server.close()
        for session in list(self._sessions):
            session.wake()
        tasks = [s.task for s in self._sessions if s.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for session in list(self._sessions):
                session.force_close(Reply(421, "4.3.2", f"{self.hostname} Service shutting down"))
            if pending:
                await asyncio.wait(pending, timeout=5)

    def _admit(self, session: _Session) -> Reply | None:
        ip = session.info.client_ip
        limits = self.limits
        self.connections_total += 1
        if self.admit is not None:
            refusal = self.admit(ip)
            if refusal is not None:
                return refusal
        if self._per_ip[ip] >= limits.max_connections_per_ip:
            return Reply(421, "4.7.0", f"{self.hostname} Error: too many connections from {ip}")
        net = client_network(ip)
        if limits.max_connections_per_network and self._per_net[net] >= limits.max_connections_per_network:
            return Reply(421, "4.7.0", f"{self.hostname} Error: too many connections from your network")
        if len(self._sessions) >= limits.max_connections and not self._evict_idle():
            return Reply(421, "4.7.0", f"{self.hostname} Error: too many connections")
        self._sessions.add(session)
        self._per_ip[ip] += 1
        self._per_net[net] += 1
        self._idle[session] = session.loop.time()
        self._update_stress()
        return None

    def _release(self, session: _Session) -> None:
        if session in self._sessions:
            self._sessions.discard(session)
            self._idle.pop(session, None)
            ip = session.info.client_ip
            self._per_ip[ip] -= 1
            if self._per_ip[ip] <= 0:
                del self._per_ip[ip]
            net = client_network(ip)
            self._per_net[net] -= 1
            if self._per_net[net] <= 0:
                del self._per_net[net]
            self._update_stress()

    def _mark(self, session: _Session, busy: bool) -> None:
        """A session in a transaction (MAIL FROM accepted) is not closed to make room; one that left it is,
        after the sessions idle for longer."""
        if busy:
            self._idle.pop(session, None)
        elif session not in self._idle and session in self._sessions:
            self._idle[session] = session.loop.time()

    def _evict_idle(self) -> bool:
        """At the cap under stress mode: close the longest-idle session outside a transaction (421)."""
        if not self.limits.stress_threshold or not self._idle:
            return False
        victim, since = next(iter(self._idle.items()))
        if victim.loop.time() - since < EVICT_MIN_AGE:
            return False
        self.evicted += 1
        log.info(f"stress: closing idle connection from {victim.info.peer} to make room")
        self._release(victim)
        victim.force_close(Reply(421, "4.7.0", f"{self.hostname} Error: too many connections"))
        return True

    def _update_stress(self) -> None:
        limits = self.limits
        if not limits.stress_threshold:
            return
        n = len(self._sessions)
        on_at = max(1, int(limits.stress_threshold * limits.max_connections))
        if not self.stressed and n >= on_at:
            self.stressed = True
            log.warning(f"stress mode on: {n} connections (threshold {on_at} of {limits.max_connections}); "
                        f"idle timeout {limits.stress_idle_timeout:g}s, error limit {limits.stress_max_errors}")
        elif self.stressed and n < on_at * 0.9 and n < on_at - 1:
            self.stressed = False
            log.warning(f"stress mode off: {n} connections")
        else:
            return
        for s in self._sessions:
            if s.conn is not None:
                s.conn.error_limit = limits.stress_max_errors if self.stressed else limits.max_errors
            s.wake()  # waits recompute their deadlines


def _tls_info(info: SessionInfo, transport: asyncio.BaseTransport) -> None:
    obj = transport.get_extra_info("ssl_object")
    info.tls = True
    if obj is not None:
        info.tls_version = obj.version()
        cipher = obj.cipher()
        info.tls_cipher = cipher[0] if cipher else None


class _Session(asyncio.Protocol):
    """One client connection: moves bytes between the socket and the core, awaits the backend."""

    def __init__(self, server: SmtpServer) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.conn: SmtpConnection | None = None
        self.info = SessionInfo("", 0, listener=server.listener)
        self.task: asyncio.Task | None = None
        self._out = bytearray()
        self.tarpitted = 0  # error replies this session delayed past the soft error limit
        self._waiter: asyncio.Future | None = None
        self._writable = asyncio.Event()
        self._writable.set()
        self._eof = False
        self._paused = False
        self._closed = False
        self._cmd_mark = self.loop.time()
        self._data_mark = 0.0
        self._last_rx = 0.0
        self.envelope: Envelope | None = None
        self.sink: MessageSink | None = None
        self._sink_failed = False
        self._sink_reply = QUEUE_FAIL  # what a failed sink answers (QUEUE_FULL when the disk is full)
        self._open_error: Reply | None = None
        self.counts: dict[str, list[int]] = {}
        self._screening = False
        self._early = bytearray()
        self._banner_started = False

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream server's protocol is always handed a (possibly TLS) Transport; asyncio types it as the base.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername") or ("", 0)
        self.info.client_ip = str(peer[0]) if isinstance(peer, tuple) else str(peer)
        self.info.client_port = int(peer[1]) if isinstance(peer, tuple) and len(peer) > 1 else 0
        if self.server.implicit_tls:
            _tls_info(self.info, transport)
        refusal = self.server._admit(self)
        if refusal is not None:
            self.server.connections_refused += 1
            log.warning(f"refused connection from {self.info.peer}: {refusal}")
            self.transport.write(refusal.render())
            self.transport.close()
            self._closed = True
            return
        server = self.server
        self.conn = SmtpConnection(
            server.limits,
            tls_available=server.ssl_context is not None,
            auth_available=server.auth,
            hostname=server.hostname,
            tls_active=server.implicit_tls,
            auth_plaintext=(server.auth_plaintext(self.info.client_ip) if callable(server.auth_plaintext)
                            else server.auth_plaintext),
            lmtp=server.lmtp,
        )
        if server.stressed:
            self.conn.error_limit = server.limits.stress_max_errors
        self._screening = server.screen is not None
        self.task = self.loop.create_task(self._run())

    def data_received(self, data: bytes) -> None:
        if self.conn is None or self._closed:
            return
        if self._screening:  # kept aside: the stage judges it, the core never parses a refused client's input
            self._early += data
            if len(self._early) > EARLY_INPUT_MAX and not self._paused:
                self._paused = True
                with contextlib.suppress(Exception):
                    self._transport.pause_reading()
            self.wake()
            return
        self.conn.receive_data(data)
        self._last_rx = self.loop.time()
        if self.conn.buffered > self.server.limits.read_buffer_high and not self._paused:
            self._paused = True
            with contextlib.suppress(Exception):
                self._transport.pause_reading()
        self.wake()

    def eof_received(self) -> bool:
        """Half-close: answer what was pipelined before the EOF, then close ourselves."""
        self._eof = True
        self.wake()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._closed = True
        self._writable.set()
        self.wake()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # -- driving the core ------------------------------------------------------------------------

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def _core(self) -> SmtpConnection:
        """The protocol core: made in ``connection_made`` before the task that handles events starts."""
        if self.conn is None:
            raise RuntimeError("SMTP session has no protocol core")
        return self.conn

    @property
    def _transport(self) -> asyncio.Transport:
        """The connection's transport: set in ``connection_made`` before the task starts."""
        if self.transport is None:
            raise RuntimeError("SMTP session has no transport")
        return self.transport

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(True)

    def force_close(self, reply: Reply) -> None:
        """Close now (server stop after grace): tell the client, drop any open message."""
        if self.conn is not None and not self._closed:
            self._out += self.conn.shutdown(reply)
            self._flush()
        self._close()
        if self.task is not None and not self.task.done():
            self.task.cancel()

    async def _run(self) -> None:
        log.info(f"connect from {self.info.peer}")
        try:
            # The connection rate first (cheap, refuses a flood at once), then the screening stage.
            refusal = await self._check_connect()
            if refusal is not None:
                self.server.connections_refused += 1
                self._out += self._core.shutdown(refusal)
                return
            if self._screening and not await self._screen():
                return
            self._out += self._core.greeting()
            await self._loop()
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception(f"error in session with {self.info.peer}")
        finally:
            await self._drop_message()
            self._flush()
            self._close()
            self.server._release(self)
            log.info(f"disconnect from {self.info.peer} {self._count_text()}")

    async def _check_connect(self) -> Reply | None:
        check = getattr(self.server.backend, "check_connect", None)
        if check is None:
            return None
        try:
            reply = await check(self.info)
        except Exception:
            log.exception(f"connect check failed for {self.info.peer}")
            return None  # a broken policy store must not close the MX
        if reply is not None:
            log.info(f"NOQUEUE: reject: CONNECT from {self.info.peer}: {reply}")
        return reply

    async def _loop(self) -> None:
        conn = self._core
        limits = self.server.limits
        while True:
            event = conn.next_event()
            if isinstance(event, ev.NeedData):
                self._flush()
                if conn.closing or self._closed:
                    return
                if self._eof:
                    log.info(f"lost connection after {self._phase()} from {self.info.peer}")
                    return
                kick_at = None
                if self.server.stopping and not conn.in_transaction:
                    # Draining: a client that is between transactions gets a short window to start
                    # another (a connection accepted just before the stop must not be refused outright).
                    kick_at = max(self._cmd_mark, self.server.stop_started) + DRAIN_IDLE
                    if kick_at <= self.loop.time():
                        self._out += conn.shutdown(
                            Reply(421, "4.3.2", f"{self.server.hostname} Service shutting down"))
                        return
                if self._paused:
                    self._paused = False
                    self._transport.resume_reading()
                if conn.state in (State.DATA, State.BDAT):
                    deadline = min(self._last_rx + limits.data_timeout, self._data_mark + limits.max_data_time)
                else:
                    idle = limits.stress_idle_timeout if self.server.stressed else limits.idle_timeout
                    deadline = self._cmd_mark + idle
                if deadline <= self.loop.time():
                    log.info(f"timeout after {self._phase()} from {self.info.peer}")
                    self._out += conn.shutdown(Reply(421, "4.4.2", f"{self.server.hostname} Error: timeout exceeded"))
                    return
                await self._wait_input(deadline if kick_at is None else min(deadline, kick_at))
                continue
            await self._handle(event)
            if conn.closing:
                self._flush()
                return
            if not self._writable.is_set():
                self._flush()
                try:
                    await asyncio.wait_for(self._writable.wait(), limits.idle_timeout)
                except TimeoutError:
                    log.info(f"timeout (client not reading) from {self.info.peer}")
                    return

    async def _wait_input(self, deadline: float) -> None:
        fut = self.loop.create_future()
        self._waiter = fut

        def expire() -> None:
            if not fut.done():
                fut.set_result(False)

        timer = self.loop.call_at(deadline, expire)
        try:
            await fut
        finally:
            timer.cancel()
            self._waiter = None

    def _phase(self) -> str:
        state = self.conn.state if self.conn else State.INIT
        if state is State.DATA:
            return "DATA"
        if state is State.BDAT:
            return "BDAT"
        return (self.conn.last_verb or "CONNECT").upper() if self.conn else "CONNECT"

    def _flush(self) -> None:
        if self._out and not self._closed and self.transport is not None:
            flush_log()  # the lines logged before this reply reach the log before the client reads it
            self.transport.write(bytes(self._out))
        self._out.clear()

    def _close(self) -> None:
        if not self._closed and self.transport is not None:
            self._closed = True
            self.transport.close()

    def _count(self, name: str, ok: bool) -> None:
        if not name:
            return
        entry = self.counts.setdefault(name, [0, 0])
        entry[0] += ok
        entry[1] += 1

    def _count_text(self) -> str:
        parts = []
        good = total = 0
        for name, (ok, n) in self.counts.items():
            parts.append(f"{name}={ok}" if ok == n else f"{name}={ok}/{n}")
            good, total = good + ok, total + n
        parts.append(f"commands={good}" if good == total else f"commands={good}/{total}")
        return " ".join(parts)

    # -- screening (the stage sees the session as a ScreenPeer) ----------------------------------

    @property
    def client_ip(self) -> str:
        return self.info.client_ip

    @property
    def client_port(self) -> int:
        return self.info.client_port

    @property
    def stressed(self) -> bool:
        return self.server.stressed

    @property
    def early_input(self) -> bytes:
        return bytes(self._early)

    @property
    def hung_up(self) -> bool:
        return self._eof

    def banner_start(self) -> None:
        self._banner_started = True
        self._out += f"220-{self.server.hostname} ESMTP\r\n".encode()
        self._flush()

    async def wait_for_input(self, seconds: float) -> None:
        deadline = self.loop.time() + seconds
        while not (self._early or self._eof or self._closed or self.server.stopping) and self.loop.time() < deadline:
            await self._wait_input(deadline)

    async def _screen(self) -> bool:
        """Run the stage; True lets the session start (what the client sent meanwhile goes to the core)."""
        screen = self.server.screen
        if screen is None:
            return True
        refusal = await screen.screen(self)
        if refusal is None:
            self._screening = False
            if self._early:
                self._core.receive_data(bytes(self._early))
                self._early.clear()
            if self._paused:
                self._paused = False
                self._transport.resume_reading()
            return True
        await self._refuse(refusal)
        return False

    async def _refuse(self, refusal: Refusal) -> None:
        """Answer a refused client (or drop it): in place of the banner, or its first command's reply."""
        reply = refusal.reply
        if reply is None or self._closed:
            return
        if not refusal.at_greeting:
            self._out += self._core.greeting()
            self._flush()
            if not self._early:
                await self.wait_for_input(2.0 if self.server.stressed else REFUSE_WAIT)
        self._out += reply.render()

    # -- events ----------------------------------------------------------------------------------

    async def _handle(self, event: ev.Event) -> None:
        conn = self._core
        if isinstance(event, ev.DataChunk):
            await self._write_sink(event.data)
            return
        if isinstance(event, ev.DataAbort):
            await self._drop_message()
            return
        if isinstance(event, ev.BdatStart):
            self._data_mark = self.loop.time()
            if event.first:
                self._open_error = await self._open_message()
            return
        self._cmd_mark = self.loop.time()
        verb = conn.last_verb
        try:
            decided = await self._decide(event)
        except Exception:
            log.exception(f"backend failure for {self.info.peer}")
            await self._drop_message()
            decided = TEMP_FAIL
        if isinstance(decided, list):  # LMTP's replies per recipient
            if len(decided) != conn.replies_due:
                log.error(f"{len(decided)} replies for {conn.replies_due} recipients from {self.info.peer}")
                decided = TEMP_FAIL
            else:
                self._count(verb, any(r.code < 400 for r in decided))
                self._out += conn.send_replies(decided)
                return
        reply = decided
        if isinstance(event, ev.DataStart) and reply.code == 354:
            self._data_mark = self._last_rx = self.loop.time()
        elif not (reply.code == 334 and isinstance(event, ev.AuthChallenge)):
            self._count(verb, reply.code < 400)
        limits = self.server.limits
        if reply.is_error and not reply.closes and conn.errors >= limits.soft_error_limit and limits.error_sleep > 0:
            self.tarpitted += 1
            self._flush()
            await asyncio.sleep(limits.error_sleep)
        self._out += conn.send_reply(reply)
        self.server._mark(self, busy=self.envelope is not None)
        if isinstance(event, ev.StartTls) and reply.code == 220:
            await self._start_tls()

    async def _decide(self, event: ev.Event) -> Reply | list[Reply]:
        conn, info, backend = self._core, self.info, self.server.backend
        if isinstance(event, (ev.Helo, ev.Ehlo)):
            await self._drop_message()
            self.envelope = None
            info.helo, info.esmtp = event.hostname, isinstance(event, ev.Ehlo)
            return conn.default_reply(event)
        if isinstance(event, ev.Mail):
            reply = await backend.check_sender(info, event.address, event.params)
            if reply is None or reply.code < 400:
                p = event.params
                self.envelope = Envelope(
                    sender=event.address,
                    ret=p.ret,
                    envid=p.envid,
                    body_type=p.body,
                    smtputf8=p.smtputf8,
                    size_hint=p.size,
                    delivery=p.delivery,
                )
                info.mail_from = event.address
                return reply or conn.default_reply(event)
            self._log_reject("MAIL", reply, event.address, None)
            return reply
        if isinstance(event, ev.Rcpt):
            env = self.envelope
            if env is None:  # the core passes RCPT on only after a MAIL this session accepted
                raise RuntimeError("RCPT without an envelope")
            reply = await backend.check_recipient(info, event.address, event.params)
            if reply is None or reply.code < 400:
                rp = event.params
                env.recipients.append(EnvelopeRecipient(event.address, rp.notify, rp.orcpt, rp.index))
                return reply or conn.default_reply(event)
            self._log_reject("RCPT", reply, env.sender, event.address)
            return reply
        if isinstance(event, ev.DataStart):
            return await self._open_message() or conn.default_reply(event)
        if isinstance(event, ev.MessageEnd):
            return await self._commit()
        if isinstance(event, ev.BdatEnd):
            if self._open_error is not None:
                reply, self._open_error = self._open_error, None
                await self._drop_message()
                return reply
            if self._sink_failed or self.sink is None:
                await self._drop_message()
                return QUEUE_FAIL
            return await self._commit() if event.last else conn.default_reply(event)
        if isinstance(event, ev.Rset):
            await self._drop_message()
            self.envelope = None
            return conn.default_reply(event)
        if isinstance(event, ev.Auth):
            return await self._authenticate(event)
        if isinstance(event, ev.AuthRefused):
            log.warning(f"{info.peer}: SASL {event.mechanism} authentication failed: "
                        f"authorization as another user, sasl_username={event.username[:100]}")
            await backend.refuse_login(info, event.mechanism, event.username)
            return event.reply
        if isinstance(event, ev.ProtocolError):
            if conn.state in (State.DATA, State.BDAT):
                await self._drop_message()
            if event.reply.code >= 500 and conn.state is not State.DATA:
                log.info(f"{self.info.peer}: {event.reply}")
            if event.close:
                log.warning(f"{event.reply} from {self.info.peer}")
                if conn.errors >= self.server.limits.max_errors:
                    log.warning(f"too many errors from {self.info.peer}: {conn.errors} errors, hard error limit "
                                f"{self.server.limits.max_errors}, {self.tarpitted} replies delayed")
            return event.reply
        return conn.default_reply(event)

    def _log_reject(self, what: str, reply: Reply, sender: str, rcpt: str | None) -> None:
        to = f" to=<{rcpt}>" if rcpt is not None else ""
        log.info(
            f"NOQUEUE: reject: {what} from {self.info.peer}: {reply}; from=<{sender}>{to} "
            f"proto={'LMTP' if self.server.lmtp else 'ESMTP' if self.info.esmtp else 'SMTP'} helo=<{self.info.helo}>"
        )

    # -- message plumbing ------------------------------------------------------------------------

    async def _open_message(self) -> Reply | None:
        """Open the sink and write the Received: header; a Reply means it failed."""
        self._open_error = None
        self._sink_failed = False
        self._sink_reply = QUEUE_FAIL
        env = self.envelope
        if env is None or not env.recipients:
            return Reply(503, "5.5.1", "Error: need RCPT command")
        try:
            sink = await self.server.backend.open_message(self.info, env)
        except Exception as exc:
            log.exception(f"open_message failed for {self.info.peer}")
            return _queue_fail(exc)
        self.sink = sink
        log.info(f"client={self.info.peer}", qid=sink.queue_id)
        header = received_header(
            self.info,
            self.server.hostname,
            self._core.protocol_name,
            sink.queue_id,
            [r.address for r in env.recipients],
        )
        await self._write_sink(header)
        return self._sink_reply if self._sink_failed else None

    async def _write_sink(self, data: bytes) -> None:
        if self.sink is None or self._sink_failed:
            return
        try:
            await self.sink.write(data)
        except Exception as exc:
            log.exception(f"write failed for {self.info.peer}", qid=self.sink.queue_id)
            self._sink_failed = True
            self._sink_reply = _queue_fail(exc)
            await self._abort_sink()

    async def _abort_sink(self) -> None:
        sink = self.sink
        if sink is None:
            return
        try:
            await sink.abort()
        except Exception:
            log.exception("abort failed", qid=sink.queue_id)

    async def _drop_message(self) -> None:
        """Forget the open message (limit hit, error, RSET, disconnect): the sink sees abort, not the tail."""
        if self.sink is not None and not self._sink_failed:
            await self._abort_sink()
        self.sink = None
        self._sink_failed = False

    async def _commit(self) -> Reply | list[Reply]:
        sink, env = self.sink, self.envelope
        self.envelope = None
        if sink is None or env is None or self._sink_failed:  # a sink is opened only for an envelope
            reply = self._sink_reply if self._sink_failed else QUEUE_FAIL
            await self._drop_message()
            return reply
        self.sink = None
        if self.server.lmtp and isinstance(sink, RecipientSink):
            return await self._commit_each(sink, env)
        try:
            reply = await sink.commit()
        except Exception as exc:
            log.exception("commit failed", qid=sink.queue_id)
            with contextlib.suppress(Exception):
                await sink.abort()
            return _queue_fail(exc)
        if reply.code < 400:
            self.server.messages_accepted += 1
            log.info(
                f"from=<{env.sender}>, nrcpt={len(env.recipients)}, proto={self._core.protocol_name}",
                qid=sink.queue_id,
            )
        else:
            log.info(f"reject: end of data from {self.info.peer}: {reply}", qid=sink.queue_id)
        return reply

    async def _commit_each(self, sink: RecipientSink, env: Envelope) -> Reply | list[Reply]:
        """LMTP: one reply per recipient from the sink (which logs each recipient's outcome)."""
        try:
            replies = await sink.commit_each()
        except Exception as exc:
            log.exception("commit failed", qid=sink.queue_id)
            with contextlib.suppress(Exception):
                await sink.abort()
            return _queue_fail(exc)
        if any(r.code < 400 for r in replies):
            self.server.messages_accepted += 1
        log.info(f"from=<{env.sender}>, nrcpt={len(env.recipients)}, proto={self._core.protocol_name}",
                 qid=sink.queue_id)
        return replies

    # -- STARTTLS and AUTH -----------------------------------------------------------------------

    async def _start_tls(self) -> None:
        self._flush()
        context = self.server.ssl_context
        if context is None:  # the core offers STARTTLS only when the server has a context
            raise RuntimeError("STARTTLS without a TLS context")
        try:
            transport = await self.loop.start_tls(
                self._transport,
                self,
                context,
                server_side=True,
                ssl_handshake_timeout=self.server.limits.tls_handshake_timeout,
            )
        except (OSError, ssl.SSLError, ConnectionError, TimeoutError) as exc:
            log.info(f"TLS handshake failed for {self.info.peer}: {exc!r}")
            self._core.shutdown(Reply(421, "4.7.0", "TLS handshake failed"))
            self._close()
            return
        if transport is None:
            self._close()
            return
        self.transport = transport
        self._paused = False
        self._cmd_mark = self.loop.time()
        self.info.helo, self.info.esmtp = None, False
        _tls_info(self.info, transport)
        info = self.info
        log.info(f"TLS connection established from {info.peer}: {info.tls_version} {info.tls_cipher}")

    async def _authenticate(self, event: ev.Auth) -> Reply:
        """The credentials of a complete SASL exchange go to ``backend.authenticate``."""
        mech, username, password = event.mechanism, event.username, event.password
        user = await self.server.backend.authenticate(self.info, mech, username, password)
        if user is None:
            log.warning(f"{self.info.peer}: SASL {mech} authentication failed")
            return Reply(535, "5.7.8", "Error: authentication failed")
        self.info.auth_user = user
        log.info(f"{self.info.peer}: sasl_method={mech}, sasl_username={user}")
        return Reply(235, "2.7.0", "Authentication successful")
