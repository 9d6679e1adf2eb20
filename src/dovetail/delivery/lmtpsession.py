"""LMTP client connections, and the ones kept open to each node between transactions (a connection cache).

Opening a connection costs the mailbox node an accept, a greeting and an LHLO, and the sender as many
round trips, for each message: Postfix's lmtp(8) keeps connections to a destination open for the next
deliveries (``lmtp_connection_cache_time_limit``), and so does this pool. A connection taken from it
was idle; the transaction on it starts with a pipelined ``RSET`` that also proves it is still alive: a
node that closed it meanwhile (restart, its idle timeout) is noticed before any message content was
sent, so the transaction is tried once more on a fresh connection without any risk of a second copy.
Each destination has a bounded number of connections in use at once (``lmtp.destination_concurrency``),
and an idle one is closed after ``idle_timeout``.

A small client of its own: aiosmtplib has no LMTP (no LHLO; its DATA reads one reply), and the
standard library's ``smtplib.LMTP`` is blocking and also reads a single reply after DATA.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

_ENHANCED = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})\s*(.*)$", re.S)


@dataclass(frozen=True)
class Nexthop:
    """Where an LMTP server listens: ``host``/``port``, or a unix socket ``path``."""

    host: str | None = None
    port: int | None = None
    path: str | None = None

    def __str__(self) -> str:
        if self.path is not None:
            return f"lmtp:unix:{self.path}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"lmtp:{host}:{self.port}"


@dataclass(frozen=True)
class LmtpReply:
    code: int
    enhanced: str
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.enhanced} {self.text}".replace("  ", " ").strip()


class LmtpError(Exception):
    """The session cannot go on (connection refused or lost, timeout, a bad reply)."""


@contextlib.asynccontextmanager
async def deadline(seconds: float, what: str) -> AsyncIterator[None]:
    """One time limit for a whole exchange (not one per line); a timeout or socket error is an LmtpError."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        raise LmtpError(f"timed out {what}") from None
    except OSError as exc:
        raise LmtpError(f"lost connection {what}: {getattr(exc, 'strerror', None) or exc!r}") from None


class LmtpSession:
    """One LMTP client connection: LHLO done, ready for transactions."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.extensions: set[str] = set()
        self.transactions = 0  # completed on this connection: a reused one starts with RSET
        self.idle_since = 0.0
        self.broken = False  # state unknown (an error, a reply cut short): never reused

    @classmethod
    async def open(cls, nexthop: Nexthop, hostname: str, wait: float) -> LmtpSession:
        try:
            async with asyncio.timeout(wait):
                if nexthop.path is not None:
                    reader, writer = await asyncio.open_unix_connection(nexthop.path)
                else:
                    reader, writer = await asyncio.open_connection(nexthop.host, nexthop.port)
        except (OSError, TimeoutError) as exc:
            raise LmtpError(f"connect to {nexthop}: {getattr(exc, 'strerror', None) or exc!r}") from None
        session = cls(reader, writer)
        try:
            async with deadline(wait, f"greeting of {nexthop}"):
                greeting = await session.reply()
                if greeting.code != 220:
                    raise LmtpError(f"{nexthop} greeted with {greeting}")
                (lhlo,) = await session.exchange([f"LHLO {hostname}"])
            if lhlo.code != 250:
                raise LmtpError(f"{nexthop} refused LHLO: {lhlo}")
            session.extensions = {line.split(" ")[0].upper() for line in lhlo.text.split("\n")[1:]}
        except BaseException:
            session.close()
            raise
        return session

    @property
    def pipelining(self) -> bool:
        return "PIPELINING" in self.extensions

    def usable(self) -> bool:
        """Not known to be dead: no error on it, and the node has not closed its end."""
        return not self.broken and not self.writer.is_closing() and not self.reader.at_eof()

    async def reply(self) -> LmtpReply:
        """The next reply (the caller's ``deadline`` bounds the wait)."""
        lines = []
        while True:
            raw = await self.reader.readline()
            if not raw.endswith(b"\n"):
                raise LmtpError("lost connection")
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if len(line) < 3 or not line[:3].isdigit():
                raise LmtpError(f"bad reply line {line[:80]!r}")
            lines.append(line[4:])
            if line[3:4] != "-":
                break
        code = int(line[:3])
        first = _ENHANCED.match(lines[0]) if len(lines) == 1 else None
        if first:
            return LmtpReply(code, first.group(1), first.group(2))
        return LmtpReply(code, "", "\n".join(lines))

    async def send(self, commands: list[str]) -> None:
        """Write ``commands`` in one go (their replies are read with :meth:`reply`)."""
        self.writer.write("".join(f"{c}\r\n" for c in commands).encode("utf-8"))
        await self.writer.drain()

    async def exchange(self, commands: list[str]) -> list[LmtpReply]:
        """Send ``commands`` and read one reply to each: all at once with PIPELINING (RFC 2920, which
        RFC 2033 requires of every LMTP server), else one after the other."""
        if self.pipelining or len(commands) == 1:
            await self.send(commands)
            return [await self.reply() for _ in commands]
        replies = []
        for command in commands:
            self.writer.write(command.encode("utf-8") + b"\r\n")
            await self.writer.drain()
            replies.append(await self.reply())
        return replies

    async def send_data(self, content: bytes) -> None:
        self.writer.write(content)
        await self.writer.drain()

    def quit(self) -> None:
        """Say QUIT and close without waiting for the answer (nothing is pending on the connection)."""
        if not self.writer.is_closing():
            with contextlib.suppress(OSError, RuntimeError):
                self.writer.write(b"QUIT\r\n")
        self.close()

    def close(self) -> None:
        self.broken = True
        with contextlib.suppress(RuntimeError):  # the loop that opened it is gone
            self.writer.close()


class LmtpPool:
    """Connections per nexthop: at most ``per_destination`` in use at once, idle ones kept for
    ``idle_timeout`` seconds (0: each transaction on a connection of its own, closed after it)."""

    def __init__(self, hostname: str, *, connect_timeout: float = 30.0, idle_timeout: float = 30.0,
                 per_destination: int = 20) -> None:
        self.hostname = hostname
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.per_destination = per_destination
        self._idle: dict[Nexthop, list[LmtpSession]] = {}
        self._slots: dict[Nexthop, asyncio.Semaphore] = {}
        self._reaper: asyncio.TimerHandle | None = None
        self.opened = 0  # connections made, for tests and statistics

    def slot(self, nexthop: Nexthop) -> asyncio.Semaphore:
        """Held for the whole transaction: bounds the connections in use to one destination."""
        sem = self._slots.get(nexthop)
        if sem is None:
            sem = self._slots[nexthop] = asyncio.Semaphore(self.per_destination)
        return sem

    def idle(self, nexthop: Nexthop) -> int:
        return len(self._idle.get(nexthop, ()))

    async def take(self, nexthop: Nexthop, fresh: bool = False) -> LmtpSession:
        """An idle connection to ``nexthop`` (the most recently used), else a new one."""
        idle = self._idle.get(nexthop)
        now = asyncio.get_running_loop().time()
        while idle and not fresh:
            session = idle.pop()
            if session.usable() and now - session.idle_since < self.idle_timeout:
                return session
            session.quit()
        session = await LmtpSession.open(nexthop, self.hostname, self.connect_timeout)
        self.opened += 1
        return session

    def give_back(self, nexthop: Nexthop, session: LmtpSession) -> None:
        """After a transaction: kept for the next one, or closed (broken, or no caching)."""
        if not session.usable() or self.idle_timeout <= 0:
            session.quit()
            return
        loop = asyncio.get_running_loop()
        session.idle_since = loop.time()
        self._idle.setdefault(nexthop, []).append(session)
        if self._reaper is None:
            self._reaper = loop.call_later(self.idle_timeout, self._reap)

    def _reap(self) -> None:
        """Close the connections idle for ``idle_timeout``; come back while any are left."""
        self._reaper = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        for nexthop, sessions in list(self._idle.items()):
            keep = [s for s in sessions if s.usable() and now - s.idle_since < self.idle_timeout]
            for session in sessions:
                if session not in keep:
                    session.quit()
            if keep:
                self._idle[nexthop] = keep
            else:
                del self._idle[nexthop]
        if self._idle:
            oldest = min(s.idle_since for sessions in self._idle.values() for s in sessions)
            self._reaper = loop.call_later(max(0.05, oldest + self.idle_timeout - now), self._reap)

    def close(self) -> None:
        """QUIT every idle connection (the queue manager stops)."""
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        for sessions in self._idle.values():
            for session in sessions:
                session.quit()
        self._idle.clear()
