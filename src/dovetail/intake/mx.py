"""The MX listener's backend: recipients validated against the directory, messages into the queue.

Postfix's order of checks: an address in one of our domains must resolve (else ``550 5.1.1``); any
other domain is relaying, refused without authentication (``554 5.7.1``) — never an open relay; a
mailbox over quota answers ``452 4.2.2`` (or ``552 5.2.2`` when configured). A message up to
``SPOOL_BYTES`` is held in memory and written, fsynced and committed in one thread call; a larger
one streams to its queue file from the first overflowing chunk on. ``250`` is sent only after the
queue says it is durable, or, with ``mx.direct_delivery``, after a message whose recipients are all
mailboxes of this node is in their Maildirs (:mod:`.direct`).

Abuse defence per command (:mod:`.ratelimit`, :mod:`.greylist`): connections, messages and recipients
per minute per client and network, then, for a valid recipient whose domain greylists, the triplet
check. Rate limits come before recipient validation, so a client probing addresses is slowed too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..directory import Resolution, Resolver
from ..queue import Envelope as QueueEnvelope
from ..queue import Queue, QueueRecipient, QueueWriter
from ..smtp.backend import Envelope, MessageSink, SessionInfo
from ..smtp.events import MailParams, RcptParams
from ..smtp.reply import Reply
from ..storage import open_storage
from ..storage.api import OverQuota
from .contentfilter import ContentFilter, FilteredSink, FilteringWriter
from .direct import DirectDelivery, DirectWriter
from .greylist import Greylist
from .ratelimit import RatePolicy
from .senderauth import AuthenticatingSink, RenamingSink, SenderAuth
from .writer import IntakeWriter

SPOOL_BYTES = 256 * 1024  # a message up to this size is held in memory and written in one go at commit


def _no_record(counter: str) -> None:
    pass


class QueueSink:
    """Adapts a queue writer to the SMTP engine's sink: streamed writes, durable commit."""

    def __init__(self, writer: IntakeWriter, record: Callable[[str], None] = _no_record) -> None:
        self.writer = writer
        self.queue_id = writer.queue_id
        self.record = record

    async def write(self, data: bytes) -> None:
        await self.writer.awrite(data)

    async def commit(self) -> Reply:
        qid = await self.writer.acommit()
        self.record("received")
        return Reply(250, "2.0.0", f"Ok: queued as {qid}")

    async def abort(self) -> None:
        await self.writer.aabort()


def to_queue_envelope(session: SessionInfo, envelope: Envelope) -> QueueEnvelope:
    protocol = "UTF8SMTP" if envelope.smtputf8 else ("ESMTP" if session.esmtp else "SMTP")
    tls = f"{session.tls_version} {session.tls_cipher}" if session.tls else None
    return QueueEnvelope(
        sender=envelope.sender,
        recipients=[QueueRecipient(address=r.address, notify=r.notify, orcpt=r.orcpt) for r in envelope.recipients],
        ret=envelope.ret, envid=envelope.envid, client_address=session.client_ip, client_name=session.client_name,
        helo=session.helo, protocol=protocol, tls=tls, auth_user=session.auth_user,
    )


def _full(maildir: Path, quota_bytes: int) -> bool:
    """Whether the mailbox has no room left at all (the message's size is not known at RCPT)."""
    try:
        open_storage(maildir, create=False).check_quota(quota_bytes, incoming=1)
    except OverQuota:
        return True
    return False


async def quota_refusal(address: str, mailboxes: Iterable[Any], over_quota: str, said: str = "") -> Reply | None:
    """The RCPT answer when one of ``mailboxes`` has no room left: ``452 4.2.2``, or ``552 5.2.2`` with
    ``over_quota = reject``; the MX and lmtpd answer alike (``said`` is the MX's Postfix-style prefix)."""
    for mb in mailboxes:
        if mb.quota_bytes and await asyncio.to_thread(_full, mb.maildir, mb.quota_bytes):
            if over_quota == "reject":
                return Reply(552, "5.2.2", f"<{address}>: {said}mailbox full")
            return Reply(452, "4.2.2", f"<{address}>: {said}mailbox full")
    return None


class MxBackend:
    """Policy of the public MX: local recipients only, quota checked, no AUTH; with ``auth``, senders
    authenticated (SPF, DKIM, DMARC) at the end of DATA."""

    def __init__(self, resolver: Resolver, queue: Queue, *, over_quota: str = "defer",
                 record: Callable[[str], None] = _no_record, auth: SenderAuth | None = None,
                 content: ContentFilter | None = None, rates: RatePolicy | None = None,
                 greylist: Greylist | None = None, direct: DirectDelivery | None = None) -> None:
        self.resolver = resolver
        self.direct = direct  # mx.direct_delivery: local recipients committed to their Maildirs before 250
        self.queue = queue
        self.record = record  # mail-flow counters: "received", "rejected", "spf_pass", ...
        self.over_quota = over_quota
        self.auth = auth
        self.content = content if content is not None and content.active else None
        self.rates = rates
        self.greylist = greylist

    def _rated(self, session: SessionInfo) -> RatePolicy | None:
        """The rate policy when it applies to this session (not to authenticated or exempt clients)."""
        rates = self.rates
        if rates is None or session.auth_user is not None or rates.exempt(session.client_ip):
            return None
        return rates

    async def check_connect(self, session: SessionInfo) -> Reply | None:
        """Before the banner: ``421 4.7.0`` for a client over its connection rate."""
        rates = self._rated(session)
        return None if rates is None else await asyncio.to_thread(rates.connection, session.client_ip)

    async def check_sender(self, session: SessionInfo, address: str, params: MailParams) -> Reply | None:
        rates = self._rated(session)
        return None if rates is None else await asyncio.to_thread(rates.message, session.client_ip)

    async def _resolve(self, address: str) -> Resolution:
        hit = self.resolver.cached(address)
        return hit if hit is not None else await asyncio.to_thread(self.resolver.resolve, address)

    async def check_recipient(self, session: SessionInfo, address: str, params: RcptParams) -> Reply | None:
        rates = self._rated(session)
        if rates is not None and (reply := await asyncio.to_thread(rates.recipient, session.client_ip)):
            return reply
        res = await self._resolve(address)
        reply = await self._check_recipient(address, res)
        if reply is not None:
            self.record("rejected")
            return reply
        return await self._greylisted(session, res)

    async def _greylisted(self, session: SessionInfo, res: Resolution) -> Reply | None:
        gl = self.greylist
        if gl is None or not (gl.settings.enabled if res.greylist is None else res.greylist):
            return None
        if session.auth_user is not None or gl.exempt(session.client_ip):
            return None
        decision = await asyncio.to_thread(gl.check, session.client_ip, session.mail_from or "", res.address)
        self.record(f"greylist_{decision.reason}")
        return decision.reply()

    async def _check_recipient(self, address: str, res: Resolution) -> Reply | None:
        if res.status == "not_local":
            return Reply(554, "5.7.1", f"<{address}>: Relay access denied")
        if res.status == "invalid":
            return Reply(501, "5.1.3", f"<{address}>: Recipient address rejected: bad address syntax")
        if res.status == "unknown":
            return Reply(550, "5.1.1", f"<{address}>: Recipient address rejected: User unknown in virtual "
                                       "mailbox table")
        if res.status == "disabled":
            return Reply(550, "5.2.1", f"<{address}>: Recipient address rejected: mailbox disabled")
        if res.status == "refused":
            return Reply(550, "5.7.1", f"<{address}>: Recipient address rejected: {res.reason}")
        if res.status == "loop":
            return Reply(550, "5.4.6", f"<{address}>: Recipient address rejected: alias loop")
        return await quota_refusal(address, res.mailboxes, self.over_quota, "Recipient address rejected: ")

    async def open_message(self, session: SessionInfo, envelope: Envelope) -> MessageSink:
        qenv = to_queue_envelope(session, envelope)
        qenv.recipients = await self._expand_forwards(qenv.recipients)
        queued: QueueWriter = await self.queue.aopen_incoming(qenv, spool=SPOOL_BYTES)
        writer: IntakeWriter = queued
        if self.direct is not None and await self._all_local(qenv.recipients):
            writer = DirectWriter(queued, self.direct.agent)
        if self.content is None:
            return await self._sink(session, writer)
        authenticated = self.auth is not None and not self.auth.exempt_client(session.client_ip)
        filtering = FilteringWriter(writer, self.content, session, self.record, results_on_top=authenticated)
        return FilteredSink(await self._sink(session, filtering), filtering, self.record)

    async def _sink(self, session: SessionInfo, writer: IntakeWriter) -> MessageSink:
        auth = self.auth
        if auth is None:
            return QueueSink(writer, self.record)
        if auth.exempt_client(session.client_ip):
            return RenamingSink(writer, auth.authserv_id, self.record)
        enforcing = []
        for rcpt in writer.envelope.recipients:
            res = await self._resolve(rcpt.original or rcpt.address)
            enforcing.append(auth.enforcing(res.dmarc_enforce))
        return AuthenticatingSink(writer, auth, session, enforcing, self.record)

    async def _all_local(self, recipients: list[QueueRecipient]) -> bool:
        """Whether the MX may deliver the message itself (:mod:`.direct`): every recipient a mailbox of
        this node that the queue manager would give to the Maildir agent, and no success DSN asked for."""
        direct = self.direct
        assert direct is not None
        for rcpt in recipients:
            if rcpt.original is not None or (rcpt.notify is not None and "SUCCESS" in rcpt.notify):
                return False
            if not direct.local(await self._resolve(rcpt.address)) or await direct.routed_elsewhere(rcpt.address):
                return False
        return True

    async def _expand_forwards(self, recipients: list[QueueRecipient]) -> list[QueueRecipient]:
        """Aliases that forward outside our domains become recipients of their own (as Postfix's
        cleanup expands virtual aliases), so the queue manager hands them to the outbound transport;
        ``original`` keeps the address the client gave."""
        out: list[QueueRecipient] = []
        seen: set[str] = set()
        for rcpt in recipients:
            res = await self._resolve(rcpt.address)
            if res.mailboxes or not res.external:
                out.append(rcpt)
            for ext in res.external:
                if ext not in seen:
                    seen.add(ext)
                    out.append(QueueRecipient(address=ext, original=rcpt.address, notify=rcpt.notify,
                                              orcpt=rcpt.orcpt or f"rfc822;{rcpt.address}"))
        return out

    async def authenticate(self, session: SessionInfo, mechanism: str, username: str, password: str) -> str | None:
        return None  # the MX offers no AUTH; submission has its own backend

    async def refuse_login(self, session: SessionInfo, mechanism: str, username: str) -> None:
        return None  # the MX offers no AUTH
