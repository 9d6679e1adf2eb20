"""The asyncio adapter: sockets, TLS, timers and IDLE waiting around the sans-I/O ``Session``.

The master binds the listening socket and forks workers that share it, so ``start(sock=...)`` takes
an already-bound socket; ``start(host=..., port=...)`` binds one itself (tests, single process).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from dovetail.imap.limits import Limits
from dovetail.imap.proxy import ProxyError, open_backend, splice
from dovetail.imap.session import ConnInfo, Session, UserRegistry
from dovetail.log import get_logger
from dovetail.mailauth.accounts import Account, Authenticator
from dovetail.mailauth.homes import LoginHomes
from dovetail.mailauth.networks import in_networks, parse_networks
from dovetail.mailauth.penalty import AuthPenalty
from dovetail.mailauth.slots import MemorySlots, Slots
from dovetail.storage.api import MailStorage

log = get_logger("imap")

READ_SIZE = 64 * 1024


def default_storage_factory(account: Account) -> MailStorage:
    from dovetail.storage import open_storage

    return open_storage(Path(account.mail_root))


class ImapServer:
    def __init__(
        self,
        authenticator: Authenticator,
        storage_factory: Callable[[Account], MailStorage] = default_storage_factory,
        limits: Limits | None = None,
        ssl_context: ssl.SSLContext | None = None,
        implicit_tls: bool = False,
        *,
        trusted_networks: Iterable[str] = (),
        server_name: str = "Dovetail",
        penalty: AuthPenalty | None = None,
        slots: Slots | None = None,
        homes: LoginHomes | None = None,
    ) -> None:
        self.authenticator = authenticator
        self.storage_factory = storage_factory
        self.limits = limits or Limits()
        self.ssl_context = ssl_context
        self.implicit_tls = implicit_tls
        if implicit_tls and ssl_context is None:
            raise ValueError("implicit TLS needs an ssl_context")
        self.trusted_networks = parse_networks(trusted_networks)
        self.server_name = server_name
        self.homes = homes  # in a cluster: logins homed on another node are proxied there
        lim = self.limits
        self.penalty = penalty or AuthPenalty(lim.auth_fail_base_delay, lim.auth_fail_max_delay,
                                              lim.auth_fail_lockout, lim.auth_fail_window)
        # Connections per IP and per user: in this process, or across the service's workers.
        self.slots: Slots = slots if slots is not None else MemorySlots()
        self.users = UserRegistry(lim.max_connections_per_user, self.slots)
        self.sessions: set[Session] = set()
        self._session_tasks: dict[Session, asyncio.Task[Any]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self._stopping = asyncio.Event()
        # Connection tasks waiting for their client's next bytes: stop() cancels them (and takes them out).
        self._reading: set[asyncio.Task[Any]] = set()

    async def start(self, sock: Any = None, host: str = "127.0.0.1", port: int = 0) -> int:
        """Start accepting; returns the bound port."""
        tls = self.ssl_context if self.implicit_tls else None
        if sock is not None:
            self._server = await asyncio.start_server(self._client, sock=sock, ssl=tls, limit=READ_SIZE)
        else:
            self._server = await asyncio.start_server(self._client, host, port, ssl=tls, limit=READ_SIZE)
        return self._server.sockets[0].getsockname()[1]

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting; sessions finish the command they run (up to ``grace`` seconds), say BYE and close."""
        if self._server is not None:
            self._server.close()
        self._stopping.set()
        reading = list(self._reading)
        self._reading.clear()
        for task in reading:
            task.cancel()  # the connection says BYE and closes (see _run)
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for sess in list(self.sessions):
                sess.shutdown()
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=2.0)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    def disconnect(self, tenants: set[str], reason: str) -> int:
        """End the logged-in sessions of ``tenants`` now, with ``* BYE <reason>`` (a tenant's move is in its
        final sync: what they changed after it would stay behind). Returns how many were ended."""
        ended = 0
        for session, task in list(self._session_tasks.items()):
            account = session.account
            if account is None or account.tenant not in tenants or session.closed:
                continue
            session.write(f"* BYE {reason}")
            session.logout_reason = reason
            session.closed = True
            task.cancel()  # the connection's task writes what is pending (the BYE) and closes
            ended += 1
        return ended

    def _is_secure_net(self, ip: str) -> bool:
        return in_networks(ip, self.trusted_networks, loopback=True)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        peer = writer.get_extra_info("peername") or ("?", 0)
        local = writer.get_extra_info("sockname") or ("?", 0)
        rip = str(peer[0])
        tls = writer.get_extra_info("sslcontext") is not None
        conn = ConnInfo(rip, int(peer[1]), str(local[0]), int(local[1]), tls=tls,
                        secure=tls or self._is_secure_net(rip),
                        starttls_available=self.ssl_context is not None and not tls)
        # Slots and the penalty ledger may be files shared by the workers: off the event loop. A node proxying
        # its clients here is not one client: the front counted each client's own address already.
        ip_slot = not (self.homes is not None and await asyncio.to_thread(self.homes.is_node_address, rip))
        if ip_slot and not await asyncio.to_thread(self.slots.acquire, "ip:" + rip,
                                                   self.limits.max_connections_per_ip):
            log.info(f"Disconnected: Too many connections from IP rip={rip}")
            with contextlib.suppress(Exception):
                writer.write(b"* BYE Too many connections from your IP address.\r\n")
                await writer.drain()
                writer.close()
            self._tasks.discard(task)
            return
        session = Session(self.authenticator, self.storage_factory, self.limits, conn, self.penalty, self.users,
                          self.server_name, homes=self.homes)
        self.sessions.add(session)
        self._session_tasks[session] = task
        try:
            await self._run(session, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, TimeoutError):
            pass
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                writer.write(session.data_to_send())
        except Exception as exc:  # noqa: BLE001 - one broken connection must not reach the loop
            log.exception("connection failed", rip=rip, error=repr(exc))
        finally:
            self.sessions.discard(session)
            self._session_tasks.pop(session, None)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(session.connection_lost(keep_slot=True), 5.0)
            # The IP's slot and the user's go back in one write to the shared file.
            held = [key for key in ("ip:" + rip if ip_slot else None, session.take_slot()) if key]
            if held:
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(self.slots.release, *held)
            with contextlib.suppress(Exception):
                writer.close()
                await asyncio.wait_for(writer.wait_closed(), 2.0)
            self._tasks.discard(task)

    async def _run(self, session: Session, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read, run the complete commands, send their answers, until the session ends.

        Every command passes here, so the wait for the next bytes is a plain ``await reader.read()`` under
        one ``asyncio.timeout`` whose deadline (autologout) is moved before each read and lifted while a
        command runs: a task and ``asyncio.wait`` per read cost several times the CPU of NOOP itself.
        ``stop()`` interrupts a connection waiting here by cancelling its task (see ``_reading``); only an
        idling session waits on more than its socket (``_idle_read``).
        """
        writer.write(session.greeting())
        await writer.drain()
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        reading = self._reading
        pending: asyncio.Task[bytes] | None = None  # a read that outlived an IDLE wakeup
        changed = False
        try:
            async with asyncio.timeout(None) as deadline:
                while not session.closed:
                    if self._stopping.is_set():
                        session.shutdown()
                        break
                    deadline.reschedule(loop.time() + max(session.seconds_left(), 0.0))
                    reading.add(task)
                    try:
                        if session.idling or pending is not None:
                            data, pending, changed = await self._idle_read(session, reader, pending)
                        else:
                            data = await reader.read(READ_SIZE)
                    except asyncio.CancelledError:
                        # stop() takes the task out of _reading as it cancels it; any other cancellation
                        # (the deadline, disconnect(), the loop's) goes on.
                        if task in reading or session.closed or not self._stopping.is_set():
                            raise
                        task.uncancel()
                        session.shutdown()
                        break
                    finally:
                        reading.discard(task)
                    deadline.reschedule(None)
                    if changed:  # the watched mailbox changed while idling: the updates go out
                        changed = False
                        await session.idle_refresh()
                        await self._flush(session, writer)
                    if data is None:  # an IDLE wakeup: the read goes on
                        continue
                    if not data:
                        break
                    session.feed(data)
                    while await session.step() and not session.starttls_requested:
                        await self._flush(session, writer)
                    if session.proxy_requested is not None:
                        await self._proxy(session, reader, writer)
                        continue
                    if session.starttls_requested:
                        assert self.ssl_context is not None
                        # Stop reading before the OK goes out: the client's ClientHello must reach the TLS
                        # layer, not the plaintext stream buffer.
                        # (uvloop's transports have pause_reading but are no asyncio.ReadTransport subclass)
                        pause_reading = getattr(writer.transport, "pause_reading", None)
                        assert pause_reading is not None
                        pause_reading()
                        await self._flush(session, writer)
                        await writer.start_tls(self.ssl_context)
                        session.tls_started()
                    await self._flush(session, writer)
        except TimeoutError:
            if not deadline.expired():
                raise  # a write timeout: the client stopped reading
            session.timed_out()
        finally:
            if pending is not None and not pending.done():
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pending
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._flush(session, writer), 5.0)

    async def _idle_read(self, session: Session, reader: asyncio.StreamReader, pending: asyncio.Task[bytes] | None
                         ) -> tuple[bytes | None, asyncio.Task[bytes] | None, bool]:
        """Wait for the client's bytes or, while idling, for a hint that the watched mailbox changed.

        Returns the bytes read (None after a wakeup), the read still going on (kept for the next call, so no
        bytes are lost between wakeups) and whether the wakeup calls for a refresh."""
        read = pending if pending is not None else asyncio.ensure_future(reader.read(READ_SIZE))
        if not session.idling:
            return await read, None, False
        watch = asyncio.ensure_future(session.idle_wait())
        try:
            done, _ = await asyncio.wait({read, watch}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            read.cancel()
            raise
        finally:
            if not watch.done():
                watch.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await watch
        changed = watch in done and watch.result()
        if read in done:
            return read.result(), None, changed
        return None, read, changed

    async def _proxy(self, session: Session, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Hand the session to the account's home node (``proxy.py``), or answer the login NO [UNAVAILABLE]."""
        request = session.proxy_requested
        assert request is not None and self.homes is not None
        await self._flush(session, writer)
        source = await asyncio.to_thread(self.homes.source_address)
        try:
            backend = await open_backend(request, source)
        except ProxyError as exc:
            session.proxy_failed(str(exc))
            await self._flush(session, writer)
            return
        try:
            pending = session.proxy_started(backend.capabilities)
            await self._flush(session, writer)
            if pending:
                backend.writer.write(pending)
        except BaseException:
            backend.writer.close()
            raise
        await splice((reader, writer), backend, self._stopping)

    async def _flush(self, session: Session, writer: asyncio.StreamWriter) -> None:
        data = session.data_to_send()
        if data:
            writer.write(data)
            # The socket usually takes a response whole: waiting (a task for wait_for's timeout) only
            # when some is left in the transport's buffer, or when drain() has an error to raise.
            transport = writer.transport
            if transport.get_write_buffer_size() or transport.is_closing():
                await asyncio.wait_for(writer.drain(), self.limits.write_timeout)
