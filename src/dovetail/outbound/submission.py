"""Submission policy (587 STARTTLS / 465 implicit TLS) for the SMTP engine: who may send as whom.

AUTH checks mailbox passwords (``user@domain``) or the tenant's SMTP credentials; the engine
offers AUTH only over TLS (or from trusted networks). Then: the envelope sender's domain and the
From: header's domain must belong to the authenticated tenant; unauthenticated clients are refused
(``530 5.7.0``), never relayed; the tenant's rate limit answers ``451 4.7.1`` and its daily quota
``452 4.7.0``. The From: check runs on the header section as it streams through, before commit.

Recipients on the tenant's suppression list (the same lookup as the send API's) are handled by the
tenant's policy (``tenant set --suppressed-recipients``): ``reject`` answers that RCPT TO with
``550 5.7.1`` and the reason, the others proceed; ``drop`` accepts it and leaves it out of the queued
message, and a message left with no recipient is accepted and discarded (the log says so). Each
suppressed recipient is reported to the event sink as a ``suppressed`` delivery event. The policy is
read once per transaction (at MAIL FROM); ``drop`` looks all recipients up in one query when the
message opens, ``reject`` must answer each RCPT TO on its own, so it asks per recipient (one query
on the list's unique index).
"""

from __future__ import annotations

import asyncio
import email.utils
from collections import OrderedDict
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from dovetail.directory.addresses import AddressError, split_address
from dovetail.directory.store import Directory
from dovetail.intake.mx import to_queue_envelope
from dovetail.log import get_logger
from dovetail.mailauth.passwords import verify_async
from dovetail.mailauth.penalty import AuthPenalty
from dovetail.outbound.credentials import SmtpCredentials
from dovetail.outbound.events import DeliveryEvent, EventSink, Suppressions
from dovetail.outbound.limits import LimitExceeded, SendLimiter
from dovetail.queue import Envelope as QueueEnvelope
from dovetail.queue import Queue, QueueWriter, new_queue_id
from dovetail.smtp.backend import Envelope, MessageSink, SessionInfo
from dovetail.smtp.events import MailParams, RcptParams
from dovetail.smtp.reply import Reply

MAX_HEADER_SCAN = 256 * 1024
AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")

log = get_logger("submission")


@dataclass(frozen=True)
class _Transaction:
    """What MAIL FROM settled for the RCPTs and the message that follow it in one session."""

    tenant: str
    sender: str
    suppressed_policy: str | None  # reject | drop; None when no suppression list is wired


class _FromCheckSink:
    """Streams into the queue while keeping the header section to check From: before commit.

    ``writer`` is None when every recipient was dropped as suppressed: the message is still received
    and checked, then discarded instead of queued.
    """

    def __init__(self, backend: SubmissionBackend, writer: QueueWriter | None, tenant: str, envelope: QueueEnvelope,
                 dropped: dict[str, str]) -> None:
        self.backend = backend
        self.writer = writer
        self.tenant = tenant
        self.envelope = envelope
        self.dropped = dropped  # {recipient: suppression reason}, left out of the queued message
        self.queue_id = writer.queue_id if writer is not None else new_queue_id()
        self._head = bytearray()
        self._head_done = False

    async def write(self, data: bytes) -> None:
        if not self._head_done:
            self._head += data
            if b"\r\n\r\n" in self._head or b"\n\n" in self._head or len(self._head) > MAX_HEADER_SCAN:
                self._head_done = True
        if self.writer is not None:
            await self.writer.awrite(data)

    def _message_id(self) -> str | None:
        for name, value in self._headers() or []:
            if name == "message-id":
                return value.strip() or None
        return None

    def _headers(self) -> list[tuple[str, str]] | None:
        """(lower-cased name, unfolded value) of the header section, or None when it did not end in time."""
        head = bytes(self._head)
        ends = [i for i in (head.find(b"\r\n\r\n"), head.find(b"\n\n")) if 0 <= i <= MAX_HEADER_SCAN]
        if not ends and len(head) > MAX_HEADER_SCAN:
            return None
        text = head[: min(ends, default=len(head))].decode("utf-8", "replace").replace("\r\n", "\n")
        out: list[tuple[str, str]] = []
        for line in text.split("\n"):
            if line[:1] in (" ", "\t") and out:
                out[-1] = (out[-1][0], out[-1][1] + line)
                continue
            name, colon, value = line.partition(":")
            # "From :" (RFC 5322 obs-optional WSP before the colon) is still a From: to many readers.
            out.append((name.rstrip(" \t").lower() if colon else "", value))
        return out

    def _domains(self, values: list[str]) -> list[str] | None:
        out = []
        for _, addr in email.utils.getaddresses(values):
            try:
                out.append(split_address(addr)[1])
            except AddressError:
                return None
        return out or None

    async def _identity_error(self) -> Reply | None:
        """From:, Sender: and Resent-From:/Resent-Sender: must all name the authenticated tenant's domains."""
        headers = self._headers()
        if headers is None:
            return Reply(552, "5.3.4", f"Header section longer than {MAX_HEADER_SCAN} octets")
        values: dict[str, list[str]] = {}
        for name, value in headers:
            values.setdefault(name, []).append(value)
        froms = values.get("from", [])
        from_domains = self._domains(froms) if len(froms) == 1 else None
        if from_domains is None:
            return Reply(550, "5.6.0", "Message must have exactly one valid From: header")
        senders = values.get("sender", [])
        if len(senders) > 1:
            return Reply(550, "5.6.0", "Message may have at most one Sender: header")
        checked = [("From:", from_domains)]
        for label, name in (("Sender:", "sender"), ("Resent-From:", "resent-from"),
                            ("Resent-Sender:", "resent-sender")):
            for value in values.get(name, []):
                doms = self._domains([value])
                if doms is None:
                    return Reply(550, "5.6.0", f"Bad address in {label} header")
                checked.append((label, doms))
        for label, doms in checked:
            for dom in doms:
                if await self.backend.tenant_of_domain(dom) != self.tenant:
                    return Reply(553, "5.7.1", f"{label} domain {dom} is not owned by the authenticated user")
        return None

    async def commit(self) -> Reply:
        error = await self._identity_error()
        if error is not None:
            await self.abort()
            return error
        if self.writer is None:
            log.info(f"discarded: from=<{self.envelope.sender}>, all {len(self.dropped)} recipient(s) on the "
                     "suppression list", qid=self.queue_id)
            await self.backend.report_suppressed(self.tenant, self.envelope.sender, self.dropped, "",
                                                 self._message_id())
            return Reply(250, "2.0.0", f"Ok: {self.queue_id} accepted and discarded: every recipient is on "
                                       "the suppression list")
        refused = await asyncio.to_thread(self.backend.limiter.consume, self.tenant,
                                          len(self.writer.envelope.recipients))
        if refused:
            await self.writer.aabort()
            return Reply(451, "4.7.1", refused.message) if refused.kind == "rate" else Reply(452, "4.7.0",
                                                                                           refused.message)
        qid = await self.writer.acommit()
        if self.dropped:
            log.info(f"dropped {len(self.dropped)} recipient(s) on the suppression list: "
                     + ", ".join(f"<{a}> ({r})" for a, r in self.dropped.items()), qid=qid)
            await self.backend.report_suppressed(self.tenant, self.envelope.sender, self.dropped, qid,
                                                 self._message_id())
        return Reply(250, "2.0.0", f"Ok: queued as {qid}")

    async def abort(self) -> None:
        if self.writer is not None:
            await self.writer.aabort()


class SubmissionBackend:
    """``smtp.backend.Backend`` for the submission listeners."""

    def __init__(self, engine: Engine, queue: Queue, *, limiter: SendLimiter | None = None,
                 credentials: SmtpCredentials | None = None, penalty: AuthPenalty | None = None,
                 suppressions: Suppressions | None = None, events: EventSink | None = None) -> None:
        self.engine = engine
        self.directory = Directory(engine)
        self.queue = queue
        self.limiter = limiter or SendLimiter(engine)
        self.credentials = credentials or SmtpCredentials(engine)
        self.suppressions = suppressions
        self.events = events
        self._user_tenant: OrderedDict[str, str] = OrderedDict()
        # The open transaction of each session, by the session object's id: MAIL FROM sets it before any
        # RCPT of that session is asked about, so an id a closed session left behind is never read.
        self._transactions: OrderedDict[int, _Transaction] = OrderedDict()
        # Failed logins slow down per user and per client IP, then are refused for a while (as IMAP does).
        self.penalty = penalty or AuthPenalty()

    async def tenant_of_domain(self, domain: str) -> str | None:
        return await asyncio.to_thread(self.directory.domain_tenant, domain, enabled_only=True)

    async def _tenant(self, session: SessionInfo) -> str | None:
        """The authenticated user's tenant: cached, and looked up again (still enabled?) when evicted."""
        user = session.auth_user
        if not user:
            return None
        tenant = self._user_tenant.get(user)
        if tenant is None:
            tenant = await asyncio.to_thread(self._lookup_tenant, user)
            if tenant is not None:
                self._remember(user, tenant)
        return tenant

    def _lookup_tenant(self, user: str) -> str | None:
        if "@" in user:
            row = self.directory.mailbox_get(user)
            return row["tenant"] if row is not None and row["enabled"] else None
        return self.credentials.tenant_of(user)

    def _remember(self, user: str, tenant: str) -> None:
        self._user_tenant[user] = tenant
        self._user_tenant.move_to_end(user)
        while len(self._user_tenant) > 10_000:
            self._user_tenant.popitem(last=False)

    async def authenticate(self, session: SessionInfo, mechanism: str, username: str, password: str) -> str | None:
        ip = session.client_ip
        # The penalty's ledger is a file the workers share: its reads and writes stay off the event loop.
        if await asyncio.to_thread(self.penalty.blocked, username, ip):
            await asyncio.sleep(self.penalty.max_delay)
            log.warning(f"authentication refused: too many failures, user={username[:100]}, rip={ip}")
            return None
        user = await self._check(username, password)
        if user is None:
            await asyncio.sleep(await asyncio.to_thread(self.penalty.record_failure, username, ip))
            log.info(f"authentication failed: mechanism={mechanism}, user={username[:100]}, rip={ip}")
            return None
        await asyncio.to_thread(self.penalty.record_success, username, ip)
        return user

    async def refuse_login(self, session: SessionInfo, mechanism: str, username: str) -> None:
        """Refused before the password check (another user's authorization identity): counted and delayed
        like a wrong password, as Dovecot's auth penalty counts it."""
        ip = session.client_ip
        await asyncio.sleep(await asyncio.to_thread(self.penalty.record_failure, username, ip))
        log.info(f"authentication failed: mechanism={mechanism}, user={username[:100]}, rip={ip}, "
                 "authorization as another user")

    async def _check(self, username: str, password: str) -> str | None:
        if "@" in username:
            row = await asyncio.to_thread(self.directory.mailbox_get, username)
            if row is None or not row["enabled"] or not await verify_async(row["password_hash"], password):
                return None
            user, tenant = f"{row['local_part']}@{row['domain']}", row["tenant"]
        else:
            tenant = await self.credentials.verify(username, password)
            if tenant is None:
                return None
            user = username
        self._remember(user, tenant)
        return user

    async def check_sender(self, session: SessionInfo, address: str, params: MailParams) -> Reply | None:
        tenant = await self._tenant(session)
        if tenant is None:
            return AUTH_REQUIRED
        if not address:
            return Reply(553, "5.7.1", "<>: Sender address rejected: a null sender may not be submitted")
        try:
            _, dom = split_address(address)
        except AddressError:
            return Reply(553, "5.1.7", f"<{address}>: Sender address rejected: bad address syntax")
        if await self.tenant_of_domain(dom) != tenant:
            return Reply(553, "5.7.1", f"<{address}>: Sender address rejected: not owned by user "
                                       f"{session.auth_user}")
        refused, policy = await asyncio.to_thread(self._sender_checks, tenant)
        if refused:
            return Reply(451, "4.7.1", refused.message) if refused.kind == "rate" else Reply(452, "4.7.0",
                                                                                           refused.message)
        self._transactions[id(session)] = _Transaction(tenant, address, policy)
        self._transactions.move_to_end(id(session))
        while len(self._transactions) > 10_000:
            self._transactions.popitem(last=False)
        return None

    def _sender_checks(self, tenant: str) -> tuple[LimitExceeded | None, str | None]:
        """(the limiter's refusal or None, the tenant's suppressed-recipients policy), in one thread hop."""
        refused = self.limiter.check(tenant, 1)
        if refused or self.suppressions is None:
            return refused, None
        return None, self.directory.tenant_suppressed_recipients(tenant) or "reject"

    def _transaction(self, session: SessionInfo, tenant: str) -> _Transaction | None:
        txn = self._transactions.get(id(session))
        return txn if txn is not None and txn.tenant == tenant else None

    async def check_recipient(self, session: SessionInfo, address: str, params: RcptParams) -> Reply | None:
        tenant = await self._tenant(session)
        if tenant is None:
            return AUTH_REQUIRED
        try:
            split_address(address)
        except AddressError:
            return Reply(501, "5.1.3", f"<{address}>: Recipient address rejected: bad address syntax")
        txn = self._transaction(session, tenant)
        if self.suppressions is not None and txn is not None and txn.suppressed_policy == "reject":
            found = await asyncio.to_thread(self.suppressions.suppression_reasons, tenant, [address])
            if address in found:
                await self.report_suppressed(tenant, txn.sender, found, "", None)
                return Reply(550, "5.7.1", f"<{address}>: recipient is on the suppression list ({found[address]})")
        return None

    async def open_message(self, session: SessionInfo, envelope: Envelope) -> MessageSink:
        tenant = await self._tenant(session)
        if tenant is None:
            raise PermissionError("open_message without authentication")
        qenv = to_queue_envelope(session, envelope)
        qenv.extra["tenant"] = tenant
        txn = self._transaction(session, tenant)
        dropped: dict[str, str] = {}
        if self.suppressions is not None and txn is not None and txn.suppressed_policy == "drop":
            dropped = await asyncio.to_thread(self.suppressions.suppression_reasons, tenant,
                                              [r.address for r in qenv.recipients])
            qenv.recipients = [r for r in qenv.recipients if r.address not in dropped]
        if not qenv.recipients:
            return _FromCheckSink(self, None, tenant, qenv, dropped)
        writer = await self.queue.aopen_incoming(qenv)
        return _FromCheckSink(self, writer, tenant, qenv, dropped)

    async def report_suppressed(self, tenant: str, sender: str, recipients: dict[str, str], queue_id: str,
                                message_id: str | None) -> None:
        """One ``suppressed`` event per recipient to the event sink (webhooks); its trouble refuses no mail."""
        if self.events is None or not recipients:
            return
        events = [DeliveryEvent("suppressed", queue_id, rcpt, sender, message_id, "5.7.1", reason, tenant=tenant)
                  for rcpt, reason in recipients.items()]
        try:
            await asyncio.to_thread(self.events.outbound_events, events)
        except Exception as exc:  # noqa: BLE001 - the message stands; the sink logs its own failures too
            log.warning(f"suppression event sink failed: {exc}", qid=queue_id or None)
