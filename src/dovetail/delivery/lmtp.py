"""LMTP delivery agent (Postfix's lmtp(8)): the queue hands a mailbox node each recipient over LMTP.

Recipients are grouped by their LMTP nexthop (``host:port`` or a unix socket path, from the transport
table) and each group goes in one transaction: MAIL, one RCPT per recipient and DATA in one pipelined
write (RFC 2920; RFC 2033 requires PIPELINING of every LMTP server), then the content and one reply per
accepted recipient (RFC 2033 §4.2). Every recipient gets its own outcome: 2xx delivered, 4xx deferred
(the queue retries it with its backoff), 5xx bounced (a DSN). A nexthop that cannot be reached, or a
session that breaks before a recipient's reply, defers that recipient: the mail waits in the queue
until the node is back. Connections stay open for the next transactions to the same node
(:class:`~dovetail.delivery.lmtpsession.LmtpPool`), several at once per node, so a busy queue pays for
neither the connect, greeting and LHLO nor the extra round trips of one command at a time.

A connection the node closed while it sat idle is found out at the pipelined ``RSET`` that starts each
reused transaction, before any content went out: the transaction is tried once more on a new
connection, which cannot store a second copy. A session cut after the node stored a copy but before its
reply reached us would repeat that copy on the retry (the window Postfix's lmtp(8) has with Dovecot); a
node of ours offers ``XDELIVERYID`` and is told our queue id, arrival, attempts and each recipient's
index, so it names its copies after them and the retry finds the first copy instead.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable

from dovetail.delivery.agent import Deliverable
from dovetail.delivery.lmtpsession import LmtpError, LmtpPool, LmtpReply, LmtpSession, Nexthop, deadline
from dovetail.log import get_logger
from dovetail.queue.agent import DeliveryResult, DeliveryStatus
from dovetail.queue.envelope import QueueRecipient

__all__ = ["LmtpDeliveryAgent", "LmtpError", "LmtpPool", "LmtpReply", "LmtpSession", "Nexthop", "wire_content"]

log = get_logger("lmtp")

_BARE_LF = re.compile(rb"(?<!\r)\n")
_LEADING_DOT = re.compile(rb"(?m)^\.")


class _StaleConnection(Exception):
    """A reused connection turned out dead before any content was sent: try again on a new one."""


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
    any more, the recipient is deferred until its route is known again). ``pool`` keeps the connections
    (by default one with ``connect_timeout``, 30 s idle connections, 20 per destination)."""

    def __init__(self, nexthop_for: Callable[[str], Nexthop | None], hostname: str, timeout: float = 300.0,
                 connect_timeout: float = 30.0, pool: LmtpPool | None = None) -> None:
        self.nexthop_for = nexthop_for
        self.hostname = hostname
        self.timeout = timeout
        self.pool = pool or LmtpPool(hostname, connect_timeout=connect_timeout)

    async def deliver(self, message: Deliverable, recipients: list[QueueRecipient]) -> list[DeliveryResult]:
        nexthops = await asyncio.to_thread(lambda: [self.nexthop_for(r.address) for r in recipients])
        groups: dict[Nexthop, list[QueueRecipient]] = {}
        results: list[DeliveryResult] = []
        for rcpt, nexthop in zip(recipients, nexthops, strict=True):
            if nexthop is None:
                results.append(DeliveryResult(rcpt, "deferred", "4.3.5", "no LMTP route for this recipient", "lmtp"))
            else:
                groups.setdefault(nexthop, []).append(rcpt)
        if not groups:
            return results
        raw = await asyncio.to_thread(_read_all, message)
        for done in await asyncio.gather(*(self._transaction(message, raw, nexthop, group)
                                           for nexthop, group in groups.items())):
            results += done
        return results

    def close(self) -> None:
        """Close the idle connections (the queue manager stops)."""
        self.pool.close()

    async def _transaction(self, message: Deliverable, raw: bytes, nexthop: Nexthop,
                           recipients: list[QueueRecipient]) -> list[DeliveryResult]:
        relay = str(nexthop)
        async with self.pool.slot(nexthop):
            fresh = False
            while True:
                try:
                    session = await self.pool.take(nexthop, fresh=fresh)
                except LmtpError as exc:
                    log.info(f"{exc}", qid=message.queue_id)
                    return [DeliveryResult(r, "deferred", "4.4.1", str(exc), relay) for r in recipients]
                done: dict[int, DeliveryResult] = {}
                try:
                    await self._exchange(session, message, raw, relay, recipients, done)
                except _StaleConnection:
                    session.close()
                    fresh = True  # every idle one may be as old: a new connection
                    continue
                except LmtpError as exc:
                    session.close()
                    log.info(f"{relay}: {exc}", qid=message.queue_id)
                    reason = f"{relay}: {exc}"
                    return [done.get(r.index) or DeliveryResult(r, "deferred", "4.4.2", reason, relay)
                            for r in recipients]
                session.transactions += 1
                self.pool.give_back(nexthop, session)
                return [done[r.index] for r in recipients]

    async def _exchange(self, session: LmtpSession, message: Deliverable, raw: bytes, relay: str,
                        recipients: list[QueueRecipient], done: dict[int, DeliveryResult]) -> None:
        """One transaction on ``session``; each recipient's outcome goes into ``done`` as it is known."""

        def outcome(rcpt: QueueRecipient, reply: LmtpReply, when: str) -> DeliveryResult:
            status: DeliveryStatus = "sent" if reply.code < 300 else "deferred" if reply.code < 500 else "bounced"
            enhanced = reply.enhanced or f"{str(reply.code)[0]}.0.0"
            prefix = "" if status == "sent" else f"host {relay} said: "
            reason = f"{prefix}{reply.code} {reply.enhanced} {reply.text}".replace("  ", " ")
            if status != "sent":
                reason += f" (in reply to {when})"
            return DeliveryResult(rcpt, status, enhanced, reason, relay)

        env = message.envelope
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
        commands = [" ".join([f"MAIL FROM:<{env.sender}>", *params])]
        for rcpt in recipients:
            rparams = []
            if dsn and rcpt.notify:
                rparams.append("NOTIFY=" + ",".join(rcpt.notify))
            if named:
                rparams.append(f"XDELIVERYID={rcpt.index}")
            if dsn and rcpt.orcpt:
                kind, _, addr = rcpt.orcpt.partition(";")
                rparams.append(f"ORCPT={kind};{_xtext(addr)}")
            commands.append(" ".join([f"RCPT TO:<{rcpt.address}>", *rparams]))
        commands.append("DATA")
        reused = session.transactions > 0
        try:
            if reused:  # RSET clears what an earlier transaction may have left, and proves the connection
                # alive: a peer gone without a word (no FIN) is noticed within the connect timeout
                async with deadline(self.pool.connect_timeout, "in reply to RSET"):
                    if session.pipelining:
                        await session.send(["RSET", *commands])
                        rset = await session.reply()
                    else:
                        (rset,) = await session.exchange(["RSET"])
                if rset.code != 250:
                    raise _StaleConnection()
            async with deadline(self.timeout, "in MAIL/RCPT/DATA"):
                if reused and session.pipelining:
                    replies = [await session.reply() for _ in commands]
                else:
                    replies = await session.exchange(commands)
        except LmtpError:
            if reused:  # no content sent: nothing can have been stored
                raise _StaleConnection() from None
            raise
        mail, rcpt_replies, go = replies[0], replies[1:-1], replies[-1]
        if mail.code >= 300:
            for r in recipients:
                done[r.index] = outcome(r, mail, "MAIL FROM")
            if go.code == 354:  # a server that wants data for no recipient: the session's state is unclear
                session.close()
            return
        accepted = []
        for rcpt, reply in zip(recipients, rcpt_replies, strict=True):
            if reply.code >= 300:
                done[rcpt.index] = outcome(rcpt, reply, "RCPT TO")
            else:
                accepted.append(rcpt)
        if go.code != 354:
            for r in accepted:
                done[r.index] = outcome(r, go, "DATA")
            return
        if not accepted:
            session.close()  # as above: never reused
            return
        content = await asyncio.to_thread(wire_content, raw) if len(raw) > 65536 else wire_content(raw)
        async with deadline(self.timeout, "after end of DATA"):
            await session.send_data(content)
            for rcpt in accepted:  # one reply per accepted recipient, in RCPT order
                done[rcpt.index] = outcome(rcpt, await session.reply(), "end of DATA")


def _read_all(message: Deliverable) -> bytes:
    with message.open() as stream:
        return stream.read()
