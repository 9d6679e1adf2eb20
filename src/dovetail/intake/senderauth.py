"""Sender authentication at MX intake: SPF, DKIM and DMARC verdicts, their enforcement, and the A-R header.

The sink holds the message until the end of DATA (up to ``hold_bytes``), then authenticates it and
decides before a byte reaches the queue: a DMARC ``reject`` is answered ``550 5.7.1`` when every
recipient's domain enforces DMARC, a ``quarantine`` (or a ``reject`` some recipients' domains do not
enforce) marks the enforcing recipients for the Junk folder (the envelope's ``extra["junk"]``), and
a DNS failure is ``451 4.4.3`` only when ``mx.auth_temperror = defer``. Whether a recipient's domain
enforces is its own setting, else its tenant's, else ``mx.dmarc_enforce``. A DMARC fail that a
sealer of ``mx.arc_trusted_sealers`` vouches for in a valid ARC chain is not enforced
(:mod:`dovetail.mailauth.arcpolicy`). The accepted message gets
our ``Authentication-Results`` at the top, and incoming A-R headers naming our authserv-id are
renamed so that no one downstream takes them for ours.

A message larger than ``hold_bytes`` is judged when it overflows, on what is held: SPF and DMARC
as usual, DKIM not verified (a body of that size cannot be hashed from a prefix); the rest then
streams to the queue as it arrives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..log import get_logger
from ..mailauth.check import authenticate
from ..mailauth.dns import Resolver
from ..mailauth.headers import rename_ours, split_message
from ..mailauth.networks import Network, in_networks
from ..mailauth.results import DmarcResult, Verdicts, authentication_results
from ..smtp.backend import SessionInfo
from ..smtp.reply import Reply
from .writer import IntakeWriter

log = get_logger("smtpd")

HOLD_BYTES = 16 * 1024 * 1024


@dataclass
class SenderAuth:
    """How the MX authenticates senders (from ``mx.*`` and ``dns.*`` config keys)."""

    resolver: Resolver
    authserv_id: str
    enforce: bool = True  # mx.dmarc_enforce: for recipient domains whose domain and tenant set nothing
    temperror: str = "accept"  # or "defer"
    exempt: list[Network] = field(default_factory=list)
    hold_bytes: int = HOLD_BYTES
    trusted_sealers: list[str] = field(default_factory=list)  # mx.arc_trusted_sealers

    def exempt_client(self, ip: str) -> bool:
        return in_networks(ip, self.exempt)

    def enforcing(self, setting: bool | None) -> bool:
        """Whether a recipient domain enforces: its (or its tenant's) setting, else the global key."""
        return self.enforce if setting is None else setting


def decide(dmarc: DmarcResult, enforcing: list[bool], temperror: str = "accept") -> tuple[Reply | None, list[int]]:
    """The reply that refuses the message (or None) and the recipient indices bound for Junk."""
    wanted = [i for i, on in enumerate(enforcing) if on]
    if not wanted:
        return None, []
    if dmarc.result == "temperror" and temperror == "defer":
        return Reply(451, "4.4.3", f"Temporary DNS failure checking the sender (DMARC): {dmarc.reason}"), []
    if dmarc.result != "fail":
        return None, []
    if dmarc.disposition == "reject":
        if len(wanted) == len(enforcing):
            if dmarc.from_domain:
                text = f"Message rejected: DMARC policy of {dmarc.from_domain} (SPF and DKIM not aligned)"
            else:
                text = f"Message rejected: {dmarc.reason} (DMARC needs one From domain)"
            return Reply(550, "5.7.1", text), []
        return None, wanted  # the domains that do not enforce still get it; the others quarantine
    if dmarc.disposition == "quarantine":
        return None, wanted
    return None, []


class AuthenticatingSink:
    """A ``MessageSink`` in front of a queue writer that authenticates the message before queueing it."""

    def __init__(self, writer: IntakeWriter, auth: SenderAuth, session: SessionInfo, enforcing: list[bool],
                 record: Callable[[str], None]) -> None:
        self.writer = writer
        self.queue_id = writer.queue_id
        self.auth = auth
        self.session = session
        self.enforcing = enforcing
        self.record = record
        self._held: list[bytes] = []
        self._size = 0
        self._streaming = False
        self._refusal: Reply | None = None

    async def write(self, data: bytes) -> None:
        if self._streaming:
            if self._refusal is None:
                await self.writer.awrite(data)
            return
        self._held.append(bytes(data))
        self._size += len(data)
        if self._size > self.auth.hold_bytes:
            self._streaming = True
            await self._judge(check_dkim=False)

    async def commit(self) -> Reply:
        if not self._streaming:
            await self._judge(check_dkim=True)
        if self._refusal is not None:
            await self.writer.aabort()
            self.record("rejected")
            return self._refusal
        qid = await self.writer.acommit()
        self.record("received")
        return Reply(250, "2.0.0", f"Ok: queued as {qid}")

    async def abort(self) -> None:
        self._held = []
        await self.writer.aabort()

    async def _judge(self, check_dkim: bool) -> None:
        message = b"".join(self._held)
        self._held = []
        env = self.writer.envelope
        verdicts = await authenticate(message, client_ip=self.session.client_ip, helo=self.session.helo,
                                      sender=env.sender, resolver=self.auth.resolver, check_dkim=check_dkim,
                                      trusted_sealers=self.auth.trusted_sealers)
        refusal, junk = decide(verdicts.dmarc, self.enforcing, self.auth.temperror)
        self._count(verdicts, refusal, junk)
        applied = f", action={'refused ' + str(refusal.code) if refusal else ('junk' if junk else 'none')}"
        log.info(verdicts.log_text() + applied, qid=self.queue_id)
        if refusal is not None:
            self._refusal = refusal
            return
        if junk:
            self.writer.annotate({"junk": ",".join(str(env.recipients[i].index) for i in junk)})
        head, body = split_message(message)
        head, renamed = rename_ours(head, self.auth.authserv_id)
        if renamed:
            log.info(f"renamed {renamed} Authentication-Results header(s) naming {self.auth.authserv_id}",
                     qid=self.queue_id)
        await self.writer.awrite(authentication_results(self.auth.authserv_id, verdicts) + head + body)

    def _count(self, verdicts: Verdicts, refusal: Reply | None, junk: list[int]) -> None:
        self.record(f"spf_{verdicts.spf.result}")
        for d in verdicts.dkim:
            self.record(f"dkim_{d.result}")
        if not verdicts.dkim:
            self.record("dkim_none")
        self.record(f"dmarc_{verdicts.dmarc.result}")
        self.record(f"arc_{verdicts.arc.result}")
        if verdicts.dmarc.override:
            self.record("dmarc_override")
        if refusal is not None and refusal.code >= 500:
            self.record("dmarc_reject")
        elif junk:
            self.record("dmarc_quarantine")


class RenamingSink:
    """For exempt clients: no checks, but A-R headers naming our authserv-id are still renamed."""

    def __init__(self, writer: IntakeWriter, authserv_id: str, record: Callable[[str], None]) -> None:
        self.writer = writer
        self.queue_id = writer.queue_id
        self.authserv_id = authserv_id
        self.record = record
        self._head: list[bytes] = []
        self._size = 0
        self._tail = b""  # the last bytes held, so a blank line split over two writes is seen
        self._passing = False

    async def write(self, data: bytes) -> None:
        if self._passing:
            await self.writer.awrite(data)
            return
        self._head.append(bytes(data))
        self._size += len(data)
        seen = self._tail + data[:4] if len(data) > 4 else self._tail + data
        ended = b"\n\n" in data or b"\n\r\n" in data or b"\n\n" in seen or b"\n\r\n" in seen
        self._tail = (self._tail + data)[-3:]
        if ended or self._size > HOLD_BYTES:
            await self._flush()

    async def _flush(self) -> None:
        held = b"".join(self._head)
        self._head = []
        self._passing = True
        head, body = split_message(held)
        head, _ = rename_ours(head, self.authserv_id)
        await self.writer.awrite(head + body)

    async def commit(self) -> Reply:
        if not self._passing:
            await self._flush()
        qid = await self.writer.acommit()
        self.record("received")
        return Reply(250, "2.0.0", f"Ok: queued as {qid}")

    async def abort(self) -> None:
        self._head = []
        await self.writer.aabort()
