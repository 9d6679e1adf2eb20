"""lmtpd's backend: LMTP recipients checked against the directory, each committed into its Maildir before
its own reply (RFC 2033 §4.2), as Dovecot's LMTP server does behind Postfix.

A recipient is accepted at RCPT when it resolves to at least one mailbox here (a mailbox, or an alias
whose targets include mailboxes); anything else is ``550 5.1.1`` with the directory's reason, and a
mailbox with no room left is refused as the MX refuses it (``452 4.2.2``, or ``552 5.2.2`` with
``smtp.over_quota = reject``). Forwarding targets outside our domains are not handled here: the MX
that queued the mail expanded them already (and Postfix does its own virtual alias expansion).

After the data, the message (held in memory, or in a file under the queue's ``tmp`` folder when it is
large) goes through the same delivery agent as the queue's local mail: ``Delivered-To:`` loop checks,
quota, the Junk folder, the storage API's ``deliver()`` (file and directory fsync) and the replies
hand-over. Each recipient's reply follows its agent result: delivered ``250 2.0.0``, a temporary
failure ``4xx``, a permanent one ``5xx``; one log line per recipient, keyed by the session's queue id.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from ..directory import Resolution, Resolver
from ..log import get_logger
from ..mailauth.networks import in_networks, parse_networks
from ..queue import Envelope as QueueEnvelope
from ..queue import QueueRecipient
from ..queue.agent import DeliveryResult
from ..queue.ids import new_queue_id
from ..smtp.backend import Envelope, SessionInfo
from ..smtp.events import MailParams, RcptParams
from ..smtp.reply import Reply
from .localcommit import HOLD_BYTES, HeldMessage, LocalAgent, deliver_held
from .mx import quota_refusal

__all__ = ["HOLD_BYTES", "HeldMessage", "LmtpBackend", "LmtpSink", "LocalAgent", "network_gate", "reply_for"]

log = get_logger("lmtpd")

# Reply code for an enhanced status code's class and subject (RFC 3463), as Dovecot's LMTP answers.
_CODES = {"4.2.2": 452, "4.3.1": 452, "5.2.2": 552, "5.1.1": 550, "5.1.2": 550, "5.2.1": 550, "5.4.6": 554,
          "5.3.4": 552}


def reply_for(result: DeliveryResult) -> Reply:
    """One recipient's LMTP reply from its delivery result."""
    address = result.recipient.address
    if result.status == "sent":
        return Reply(250, "2.0.0", f"<{address}> Saved")
    code = _CODES.get(result.dsn_code) or (451 if result.status == "deferred" else 550)
    if result.status == "deferred" and code >= 500:
        code = 451
    if result.status == "bounced" and code < 500:
        code = 550
    dsn = result.dsn_code if result.dsn_code[:1] == str(code)[0] else f"{str(code)[0]}.0.0"
    return Reply(code, dsn, f"<{address}> {result.reason}")


class LmtpSink:
    """The message of one LMTP transaction; ``commit_each`` delivers it and answers per recipient."""

    def __init__(self, message: HeldMessage, agent: LocalAgent, peer: str) -> None:
        self.message = message
        self.queue_id = message.queue_id
        self.agent = agent
        self.peer = peer

    async def write(self, data: bytes) -> None:
        if self.message.on_disk:
            await asyncio.to_thread(self.message.write, data)
        else:
            self.message.write(data)

    async def commit(self) -> Reply:
        """One reply for all (what an SMTP listener would ask): the first recipient's."""
        return (await self.commit_each())[0]

    async def commit_each(self) -> list[Reply]:
        message = self.message
        try:
            results = await deliver_held(self.agent, message)
        finally:
            await asyncio.to_thread(message.discard)
        replies = []
        for rcpt, result in zip(message.envelope.recipients, results, strict=True):
            reply = reply_for(result)
            replies.append(reply)
            line = (f"to=<{rcpt.address}>, relay=lmtp, client={self.peer}, "
                    f"delay={max(0.0, time.time() - message.envelope.arrival):.2f}, dsn={reply.enhanced or '-'}, "
                    f"status={result.status} ({reply.code} {result.reason})")
            if result.status == "sent":
                log.info(line, qid=self.queue_id)
            else:
                log.warning(line, qid=self.queue_id)
        return replies

    async def abort(self) -> None:
        await asyncio.to_thread(self.message.discard)


def _no_record(counter: str) -> None:
    pass


class LmtpBackend:
    """Policy of lmtpd: recipients with a mailbox here, quota checked at RCPT, no AUTH (LMTP has none:
    the listener admits only ``lmtp.allowed_networks``, or whoever may open its unix socket)."""

    def __init__(self, resolver: Resolver, agent: LocalAgent, *, over_quota: str = "defer",
                 spool_dir: Path | None = None, record: Callable[[str], None] = _no_record,
                 here: str = "") -> None:
        self.resolver = resolver
        self.here = here.strip().lower()  # node.name: in a cluster, mailboxes homed elsewhere are refused
        self.agent = agent
        self.over_quota = over_quota
        self.spool_dir = spool_dir
        self.record = record

    async def check_sender(self, session: SessionInfo, address: str, params: MailParams) -> Reply | None:
        return None

    async def _resolve(self, address: str) -> Resolution:
        hit = self.resolver.cached(address)
        return hit if hit is not None else await asyncio.to_thread(self.resolver.resolve, address)

    async def check_recipient(self, session: SessionInfo, address: str, params: RcptParams) -> Reply | None:
        reply = await self._check_recipient(address)
        if reply is not None:
            self.record("rejected")  # the listener logs the refusal
        return reply

    async def _check_recipient(self, address: str) -> Reply | None:
        res = await self._resolve(address)
        if res.status == "invalid":
            return Reply(501, "5.1.3", f"<{address}>: bad address syntax")
        if res.status == "disabled":
            return Reply(550, "5.2.1", f"<{address}>: mailbox disabled")
        if res.status == "loop":
            return Reply(550, "5.4.6", f"<{address}>: alias loop")
        if not res.ok:
            why = {"not_local": "not a local domain", "unknown": "user unknown"}.get(res.status, res.reason or "")
            return Reply(550, "5.1.1", f"<{address}>: no mailbox here: {why}")
        if not res.mailboxes:
            return Reply(550, "5.1.1", f"<{address}>: no mailbox here: the address only forwards elsewhere")
        if any(m.paused for m in res.mailboxes):
            return Reply(451, "4.2.0", f"<{address}>: mailbox is moving to another node, try again later")
        elsewhere = sorted({m.node for m in res.mailboxes if m.node and self.here and m.node != self.here})
        if elsewhere and all(m.moved_from == self.here for m in res.mailboxes if m.node in elsewhere):
            # moved away from here moments ago: the sender's routing catches up on its retry
            return Reply(451, "4.2.0", f"<{address}>: mailbox moved to node {', '.join(elsewhere)}, try again")
        if elsewhere:
            return Reply(550, "5.1.1", f"<{address}>: no mailbox here: homed on node {', '.join(elsewhere)}")
        return await quota_refusal(address, res.mailboxes, self.over_quota)

    async def open_message(self, session: SessionInfo, envelope: Envelope) -> LmtpSink:
        # A sending node of ours names its queue entry (XDELIVERYID): the copies are named after it, so a
        # retry after a lost reply finds them (see smtp.address.DELIVERY_ID); anyone else gets our own id.
        indexes = [r.index for r in envelope.recipients]
        named = envelope.delivery is not None and None not in indexes and len(set(indexes)) == len(indexes)
        queue_id, arrival, attempts = new_queue_id(), time.time(), 0
        if named:
            qid, when, tries = str(envelope.delivery).split(".")
            queue_id, arrival, attempts = qid, float(when), int(tries)
        recipients = [QueueRecipient(address=r.address, notify=r.notify, orcpt=r.orcpt)
                      for r in envelope.recipients]
        qenv = QueueEnvelope(sender=envelope.sender, recipients=recipients, ret=envelope.ret, envid=envelope.envid,
                             client_address=session.client_ip, client_name=session.client_name, helo=session.helo,
                             protocol="LMTP", arrival=arrival, attempts=attempts)
        if named:  # the envelope numbers its recipients 0..n; these are the sender's own numbers
            for rcpt, index in zip(recipients, indexes, strict=True):
                rcpt.index = int(index or 0)
        return LmtpSink(HeldMessage(queue_id, qenv, self.spool_dir), self.agent, session.peer)

    async def authenticate(self, session: SessionInfo, mechanism: str, username: str, password: str) -> str | None:
        return None  # LMTP has no AUTH

    async def refuse_login(self, session: SessionInfo, mechanism: str, username: str) -> None:
        return None


def network_gate(networks: list[str]) -> Callable[[str], Reply | None]:
    """``SmtpServer(admit=...)`` for lmtpd: a TCP client outside ``networks`` is refused before the greeting;
    a unix-socket client (no address) is let in, since the socket's file mode decides who reaches it."""
    nets = parse_networks(networks)

    def admit(client_ip: str) -> Reply | None:
        if not client_ip or in_networks(client_ip, nets):
            return None
        log.warning(f"refused LMTP connection from {client_ip}: not in lmtp.allowed_networks")
        return Reply(421, "4.7.0", "LMTP is not open to your address")

    return admit
