"""The asyncio adapter of the IMAP client: moves bytes between a stream and the sans-I/O parser.

One connection has one reader. Commands (IDLE included) take a lock for their whole exchange, from
the tag sent to the tagged completion read, so no two coroutines ever wait on the stream at once;
IDLE waits for new mail, a deadline or the caller's stop event itself and always ends with DONE and
its tagged OK. A command cut short midway (cancelled, timed out, malformed reply) leaves the stream
at an unknown point: the connection is then marked broken and closed, never used again.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from .proto import ProtocolError, Response, ResponseParser, encode_mailbox, fetch_items, quote, sasl_plain

READ_SIZE = 65536


class ImapError(Exception):
    """A command was refused (NO/BAD) or the connection failed."""

    def __init__(self, message: str, *, completed: bool = False) -> None:
        super().__init__(message)
        self.completed = completed  # the server answered the command: the connection is still in step


@dataclass
class Selected:
    exists: int = 0
    uidvalidity: int = 0
    uidnext: int = 0


@dataclass
class ImapClient:
    host: str
    port: int
    tls: str = "implicit"  # implicit, starttls, none
    ssl_context: ssl.SSLContext | None = None
    timeout: float = 30.0
    capabilities: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._parser = ResponseParser()
        self._tag = 0
        self._lock = asyncio.Lock()  # one command (or IDLE) in flight: one reader of the stream
        self._broken: str | None = None  # why the stream can no longer be trusted
        self.changed = False  # an EXISTS/RECENT arrived since the last SELECT or IDLE

    # --- connection --------------------------------------------------------------------------------

    async def connect(self) -> None:
        if self.tls not in ("implicit", "starttls", "none"):
            raise ValueError(f"tls must be implicit, starttls or none, not {self.tls!r}")
        ctx = self.ssl_context or ssl.create_default_context()
        async with asyncio.timeout(self.timeout):
            self._reader, self._writer = await asyncio.open_connection(
                self.host, self.port, ssl=ctx if self.tls == "implicit" else None)
        greeting = await self._read()
        if greeting.kind == "BYE" or greeting.tag != "*":
            raise ImapError(f"server refused the connection: {greeting.text}")
        self._caps_from(greeting)
        if not self.capabilities:
            await self.capability()
        if self.tls == "starttls":
            if "STARTTLS" not in self.capabilities:
                raise ImapError("server does not offer STARTTLS")
            await self.command(b"STARTTLS")
            if self._writer is None:
                raise ImapError("not connected")
            await self._writer.start_tls(ctx, server_hostname=self.host)
            self._parser = ResponseParser()
            await self.capability()

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            try:
                async with asyncio.timeout(5):
                    await self._writer.wait_closed()
            except (OSError, TimeoutError, ssl.SSLError):
                pass
            self._writer = None

    async def __aenter__(self) -> ImapClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            if self._writer is not None and not self._writer.is_closing() and self._broken is None:
                async with asyncio.timeout(5):
                    await self.command(b"LOGOUT")
        except (ImapError, OSError, TimeoutError, ProtocolError):
            pass
        await self.close()

    # --- plumbing ---------------------------------------------------------------------------------------

    async def _read(self, wait: float | None = None) -> Response:
        assert self._reader is not None
        while True:
            resp = self._parser.next_response()
            if resp is not None:
                return resp
            # asyncio.timeout, not wait_for: Python 3.11's wait_for returns the read's data and drops a
            # cancellation that arrives as the read completes, and the cancelled task reads on.
            async with asyncio.timeout(wait or self.timeout):
                data = await self._reader.read(READ_SIZE)
            if not data:
                raise ImapError("connection closed by server")
            self._parser.feed(data)

    async def _send(self, data: bytes) -> None:
        assert self._writer is not None
        self._writer.write(data)
        await self._writer.drain()

    def _next_tag(self) -> str:
        self._tag += 1
        return f"D{self._tag:04d}"

    @contextlib.asynccontextmanager
    async def _exchange(self) -> AsyncIterator[None]:
        """Hold the connection for one command; a command that does not complete breaks the connection."""
        async with self._lock:
            if self._broken is not None:
                raise ImapError(f"connection unusable: {self._broken}")
            completed = False
            try:
                yield
                completed = True
            except ImapError as exc:
                completed = exc.completed
                raise
            finally:
                if not completed:
                    self._break("a command was interrupted")

    def _break(self, why: str) -> None:
        self._broken = self._broken or why
        if self._writer is not None:
            self._writer.close()  # nothing more may be read or written on this stream

    async def command(self, *args: bytes, continuation: bytes | None = None) -> tuple[Response, list[Response]]:
        """Run one command; returns its tagged OK and the untagged responses it produced."""
        async with self._exchange():
            return await self._command(*args, continuation=continuation)

    async def _command(self, *args: bytes, continuation: bytes | None = None) -> tuple[Response, list[Response]]:
        tag = self._next_tag()
        await self._send(tag.encode() + b" " + b" ".join(args) + b"\r\n")
        untagged: list[Response] = []
        while True:
            resp = await self._read()
            if resp.tag == "+":
                if continuation is None:
                    raise ImapError("unexpected continuation request")
                await self._send(continuation + b"\r\n")
                continuation = None
                continue
            if resp.tag == "*":
                if resp.kind == "BYE":
                    raise ImapError(f"server closed the session: {resp.text}")
                if resp.kind in ("EXISTS", "RECENT"):
                    self.changed = True
                untagged.append(resp)
                continue
            if resp.tag != tag:
                raise ProtocolError(f"response for unknown tag {resp.tag!r}")
            if resp.kind != "OK":
                raise ImapError(f"{args[0].decode()} failed: {resp.kind} [{resp.code}] {resp.text}".strip(),
                                completed=True)
            self._caps_from(resp)
            return resp, untagged

    def _caps_from(self, resp: Response) -> None:
        if resp.code.upper().startswith("CAPABILITY "):
            self.capabilities = set(resp.code.upper().split()[1:])

    # --- commands -------------------------------------------------------------------------------------

    async def capability(self) -> set[str]:
        _, untagged = await self.command(b"CAPABILITY")
        for r in untagged:
            if r.kind == "CAPABILITY":
                self.capabilities = {str(t).upper() for t in r.data if t}
        return self.capabilities

    async def login(self, username: str, password: str) -> None:
        """AUTHENTICATE PLAIN when offered (with SASL-IR when possible), else LOGIN."""
        if "AUTH=PLAIN" in self.capabilities:
            token = sasl_plain(username, password).encode()
            if "SASL-IR" in self.capabilities:
                await self.command(b"AUTHENTICATE PLAIN", token)
            else:
                await self.command(b"AUTHENTICATE PLAIN", continuation=token)
        else:
            if "LOGINDISABLED" in self.capabilities:
                raise ImapError("server disabled LOGIN (TLS needed?)")
            await self.command(b"LOGIN", quote(username), quote(password))
        await self.capability()  # servers announce more (IDLE, ...) once logged in

    async def select(self, mailbox: str, readonly: bool = True) -> Selected:
        verb = b"EXAMINE" if readonly else b"SELECT"
        _, untagged = await self.command(verb, quote(encode_mailbox(mailbox)))
        self.changed = False  # what SELECT reported is the state the caller now works from
        sel = Selected()
        for r in untagged:
            if r.kind == "EXISTS" and r.number is not None:
                sel.exists = r.number
            code = r.code.upper().split()
            if len(code) == 2 and code[0] in ("UIDVALIDITY", "UIDNEXT") and code[1].isdigit():
                setattr(sel, code[0].lower(), int(code[1]))
        if not sel.uidvalidity:
            raise ImapError("server sent no UIDVALIDITY")
        return sel

    async def uid_search_from(self, first_uid: int) -> list[int]:
        """UIDs at or above ``first_uid``, ascending (``n:*`` can return the last message below n)."""
        _, untagged = await self.command(b"UID SEARCH UID", f"{first_uid}:*".encode())
        uids: set[int] = set()
        for r in untagged:
            if r.kind == "SEARCH":
                uids.update(int(t) for t in r.data if isinstance(t, str) and t.isdigit())
        return sorted(u for u in uids if u >= first_uid)

    async def uid_fetch_message(self, uid: int) -> bytes | None:
        """The full message with this UID (``BODY.PEEK[]``: the \\Seen flag is left alone)."""
        return (await self.uid_fetch_messages([uid])).get(uid)

    async def uid_fetch_messages(self, uids: list[int]) -> dict[int, bytes]:
        """Several messages in one round trip, by UID; a UID that vanished is simply absent."""
        if not uids:
            return {}
        wanted = set(uids)
        _, untagged = await self.command(b"UID FETCH", ",".join(str(u) for u in sorted(wanted)).encode(),
                                         b"(UID BODY.PEEK[])")
        out: dict[int, bytes] = {}
        for r in untagged:
            if r.kind != "FETCH":
                continue
            items = fetch_items(r.data)
            body, uid = items.get("BODY[]"), str(items.get("UID", ""))
            if uid.isdigit() and int(uid) in wanted and isinstance(body, bytes | str):
                out[int(uid)] = body if isinstance(body, bytes) else body.encode()
        return out

    async def noop(self) -> list[Response]:
        _, untagged = await self.command(b"NOOP")
        return untagged

    async def idle(self, max_wait: float, until: asyncio.Event | None = None) -> bool:
        """Wait in IDLE until the mailbox changes, ``max_wait`` passes or ``until`` is set; True when new
        mail was announced. IDLE is always ended (DONE, then its tagged OK) before this returns."""
        if self.changed:  # new mail was announced during the last commands: no need to wait
            self.changed = False
            return True
        async with self._exchange():
            return await self._idle(max_wait, until)

    async def _idle(self, max_wait: float, until: asyncio.Event | None) -> bool:
        tag = self._next_tag()
        await self._send(tag.encode() + b" IDLE\r\n")
        first = await self._read()
        changed = False
        while first.tag == "*":
            changed = changed or first.kind in ("EXISTS", "RECENT")
            first = await self._read()
        if first.tag == tag:
            raise ImapError(f"IDLE refused: {first.kind} {first.text}", completed=True)
        if first.tag != "+":
            raise ImapError(f"IDLE refused: {first.kind} {first.text}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max_wait
        while not changed and not (until is not None and until.is_set()):
            resp = await self._read_unless(deadline - loop.time(), until)
            if resp is None:
                break
            if resp.tag == "*" and resp.kind == "BYE":
                raise ImapError(f"server closed the session: {resp.text}")
            if resp.kind in ("EXISTS", "RECENT"):
                changed = True
        await self._send(b"DONE\r\n")
        while True:
            resp = await self._read()
            if resp.tag == tag:
                if resp.kind != "OK":
                    raise ImapError(f"IDLE failed: {resp.kind} {resp.text}", completed=True)
                self.changed = False
                return changed
            if resp.tag == "*" and resp.kind == "BYE":
                raise ImapError(f"server closed the session: {resp.text}")
            if resp.kind in ("EXISTS", "RECENT"):
                changed = True

    async def _read_unless(self, wait: float, until: asyncio.Event | None) -> Response | None:
        """The next response, or None when ``wait`` seconds pass or ``until`` is set first.

        The read runs as a task of its own only so that it can be raced against ``until``; it is
        cancelled and awaited before this returns, so it never outlives the exchange that owns the
        stream. Bytes it had already received are kept for the parser, never dropped.
        """
        resp = self._parser.next_response()
        if resp is not None or wait <= 0:
            return resp
        assert self._reader is not None
        reading = asyncio.ensure_future(self._reader.read(READ_SIZE))
        stopping = asyncio.ensure_future(until.wait()) if until is not None else None
        try:
            await asyncio.wait({reading} | ({stopping} if stopping else set()), timeout=wait,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            if stopping is not None:
                stopping.cancel()
            if not reading.done():
                reading.cancel()
                await asyncio.wait({reading})  # raises only if this task itself is cancelled
        if reading.cancelled():
            return None
        data = reading.result()
        if not data:
            raise ImapError("connection closed by server")
        self._parser.feed(data)
        return await self._read()
