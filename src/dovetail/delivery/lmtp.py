"""LMTP delivery agent (Postfix's lmtp(8)): the queue hands a mailbox node each recipient over LMTP.

Recipients are grouped by their LMTP nexthop (``host:port`` or a unix socket path, from the transport
table) and each group goes in one transaction: LHLO, MAIL, one RCPT per recipient, DATA, then one reply
per accepted recipient (RFC 2033 §4.2). Every recipient gets its own outcome: 2xx delivered, 4xx
deferred (the queue retries it with its backoff), 5xx bounced (a DSN). A nexthop that cannot be
reached, or a session that breaks before a recipient's reply, defers that recipient: the mail waits in
the queue until the node is back. A session cut after the node stored a copy but before its reply
reached us would repeat that copy on the retry (the window Postfix's lmtp(8) has with Dovecot); a node
of ours offers ``XDELIVERYID`` and is told our queue id, arrival, attempts and each recipient's index,
so it names its copies after them and the retry finds the first copy instead.

A small client of its own: aiosmtplib has no LMTP (no LHLO; its DATA reads one reply), and the
standard library's ``smtplib.LMTP`` is blocking and also reads a single reply after DATA.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass

from dovetail.delivery.agent import Deliverable
from dovetail.log import get_logger
from dovetail.queue.agent import DeliveryResult, DeliveryStatus
from dovetail.queue.envelope import QueueRecipient

log = get_logger("lmtp")

_BARE_LF = re.compile(rb"(?<!\r)\n")
_LEADING_DOT = re.compile(rb"(?m)^\.")
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


class LmtpSession:
    """One LMTP client connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float) -> None:
        self.reader, self.writer, self.timeout = reader, writer, timeout
        self.extensions: set[str] = set()

    @classmethod
    async def open(cls, nexthop: Nexthop, hostname: str, wait: float) -> LmtpSession:
        try:
            if nexthop.path is not None:
                conn = asyncio.open_unix_connection(nexthop.path)
            else:
                conn = asyncio.open_connection(nexthop.host, nexthop.port)
            reader, writer = await asyncio.wait_for(conn, wait)
        except (OSError, TimeoutError) as exc:
            raise LmtpError(f"connect to {nexthop}: {getattr(exc, 'strerror', None) or exc!r}") from None
        session = cls(reader, writer, wait)
        try:
            greeting = await session.reply()
            if greeting.code != 220:
                raise LmtpError(f"{nexthop} greeted with {greeting}")
            lhlo = await session.command(f"LHLO {hostname}")
            if lhlo.code != 250:
                raise LmtpError(f"{nexthop} refused LHLO: {lhlo}")
            session.extensions = {line.split(" ")[0].upper() for line in lhlo.text.split("\n")[1:]}
        except BaseException:
            session.close()
            raise
        return session

    async def reply(self) -> LmtpReply:
        lines = []
        while True:
            try:
                raw = await asyncio.wait_for(self.reader.readline(), self.timeout)
            except (OSError, TimeoutError) as exc:
                raise LmtpError(f"lost connection: {exc!r}") from None
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

    async def command(self, line: str) -> LmtpReply:
        self.writer.write(line.encode("utf-8") + b"\r\n")
        await self._drain()
        return await self.reply()

    async def _drain(self) -> None:
        try:
            await asyncio.wait_for(self.writer.drain(), self.timeout)
        except (OSError, TimeoutError) as exc:
            raise LmtpError(f"lost connection: {exc!r}") from None

    async def send_data(self, content: bytes) -> None:
        self.writer.write(content)
        await self._drain()

    async def quit(self) -> None:
        try:
            await self.command("QUIT")
        except LmtpError:
            pass
        self.close()

    def close(self) -> None:
        self.writer.close()


def wire_content(raw: bytes) -> bytes:
    """The message as DATA sends it: CRLF line ends, leading dots doubled, the final dot line."""
    data = _LEADING_DOT.sub(b"..", _BARE_LF.sub(b"\r\n", raw))
    if data and not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


def _xtext(value: str) -> str:
    return "".join(c if "!" <= c <= "~" and c not in "+=" else f"+{ord(c):02X}" for c in value)


class LmtpDeliveryAgent:
    """A queue delivery agent: ``nexthop_for(address)`` names each recipient's LMTP server (None: no rule
    any more, the recipient is deferred until its route is known again)."""

    def __init__(self, nexthop_for: Callable[[str], Nexthop | None], hostname: str, timeout: float = 300.0,
                 connect_timeout: float = 30.0) -> None:
        self.nexthop_for = nexthop_for
        self.hostname = hostname
        self.timeout = timeout
        self.connect_timeout = connect_timeout

    async def deliver(self, message: Deliverable, recipients: list[QueueRecipient]) -> list[DeliveryResult]:
        groups: dict[Nexthop, list[QueueRecipient]] = {}
        results: list[DeliveryResult] = []
        for rcpt in recipients:
            nexthop = await asyncio.to_thread(self.nexthop_for, rcpt.address)
            if nexthop is None:
                results.append(DeliveryResult(rcpt, "deferred", "4.3.5", "no LMTP route for this recipient", "lmtp"))
            else:
                groups.setdefault(nexthop, []).append(rcpt)
        for nexthop, group in groups.items():
            results += await self._transaction(message, nexthop, group)
        return results

    async def _transaction(self, message: Deliverable, nexthop: Nexthop,
                           recipients: list[QueueRecipient]) -> list[DeliveryResult]:
        relay = str(nexthop)
        done: dict[int, DeliveryResult] = {}

        def outcome(rcpt: QueueRecipient, reply: LmtpReply, when: str) -> DeliveryResult:
            status: DeliveryStatus = "sent" if reply.code < 300 else "deferred" if reply.code < 500 else "bounced"
            enhanced = reply.enhanced or f"{str(reply.code)[0]}.0.0"
            prefix = "" if status == "sent" else f"host {relay} said: "
            reason = f"{prefix}{reply.code} {reply.enhanced} {reply.text}".replace("  ", " ")
            if status != "sent":
                reason += f" (in reply to {when})"
            return DeliveryResult(rcpt, status, enhanced, reason, relay)

        try:
            session = await LmtpSession.open(nexthop, self.hostname, self.connect_timeout)
            session.timeout = self.timeout
        except LmtpError as exc:
            log.info(f"{exc}", qid=message.queue_id)
            return [DeliveryResult(r, "deferred", "4.4.1", str(exc), relay) for r in recipients]
        try:
            env = message.envelope
            raw = await asyncio.to_thread(_read_all, message)
            params = []
            if "SIZE" in session.extensions:
                params.append(f"SIZE={len(raw)}")
            if "8BITMIME" in session.extensions and not raw.isascii():
                params.append("BODY=8BITMIME")
            utf8 = not (env.sender.isascii() and all(r.address.isascii() for r in recipients))
            if utf8 and "SMTPUTF8" in session.extensions:
                params.append("SMTPUTF8")
            dsn = "DSN" in session.extensions
            if dsn and env.ret:
                params.append(f"RET={env.ret}")
            if dsn and env.envid:
                params.append(f"ENVID={_xtext(env.envid)}")
            named = "XDELIVERYID" in session.extensions  # a node of ours: copies named after our queue entry
            if named:
                params.append(f"XDELIVERYID={message.queue_id}.{int(env.arrival)}.{env.attempts}")
            mail = await session.command(" ".join([f"MAIL FROM:<{env.sender}>", *params]))
            if mail.code >= 300:
                for r in recipients:
                    done[r.index] = outcome(r, mail, "MAIL FROM")
                return [done[r.index] for r in recipients]
            accepted = []
            for rcpt in recipients:
                rparams = []
                if dsn and rcpt.notify:
                    rparams.append("NOTIFY=" + ",".join(rcpt.notify))
                if named:
                    rparams.append(f"XDELIVERYID={rcpt.index}")
                if dsn and rcpt.orcpt:
                    kind, _, addr = rcpt.orcpt.partition(";")
                    rparams.append(f"ORCPT={kind};{_xtext(addr)}")
                reply = await session.command(" ".join([f"RCPT TO:<{rcpt.address}>", *rparams]))
                if reply.code >= 300:
                    done[rcpt.index] = outcome(rcpt, reply, "RCPT TO")
                else:
                    accepted.append(rcpt)
            if accepted:
                go = await session.command("DATA")
                if go.code != 354:
                    for r in accepted:
                        done[r.index] = outcome(r, go, "DATA")
                else:
                    await session.send_data(await asyncio.to_thread(wire_content, raw))
                    for rcpt in accepted:  # one reply per accepted recipient, in RCPT order
                        done[rcpt.index] = outcome(rcpt, await session.reply(), "end of DATA")
            await session.quit()
        except LmtpError as exc:
            session.close()
            log.info(f"{relay}: {exc}", qid=message.queue_id)
            reason = f"{relay}: {exc}"
            return [done.get(r.index) or DeliveryResult(r, "deferred", "4.4.2", reason, relay) for r in recipients]
        return [done[r.index] for r in recipients]


def _read_all(message: Deliverable) -> bytes:
    with message.open() as stream:
        return stream.read()
