"""What the SMTP engine asks of the rest of the system: policy decisions and a place to put messages.

The engine knows nothing of the queue or the directory; the MX and submission listeners hand it an
object satisfying ``Backend``. Returning ``None`` from a check means the standard 250 reply.
A backend may also define ``async check_connect(session) -> Reply | None``, asked before the banner (the
MX's connection rate limit); it is optional, so submission and test backends need not say anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from dovetail.smtp.events import MailParams, RcptParams
from dovetail.smtp.reply import Reply


@dataclass(slots=True)
class SessionInfo:
    """What is known about the client; updated by the engine as the session goes on."""

    client_ip: str
    client_port: int
    listener: str = "mx"
    client_name: str = "unknown"  # reverse DNS name when a caller resolved it; Postfix's "unknown"
    helo: str | None = None
    esmtp: bool = False
    tls: bool = False
    tls_version: str | None = None
    tls_cipher: str | None = None
    auth_user: str | None = None
    mail_from: str | None = None  # envelope sender of the transaction in progress (set once MAIL is accepted)

    @property
    def peer(self) -> str:
        """``host[ip]`` as Postfix logs a client."""
        return f"{self.client_name}[{self.client_ip}]"


@dataclass(frozen=True, slots=True)
class EnvelopeRecipient:
    address: str
    notify: tuple[str, ...] | None = None  # RFC 3461 NOTIFY
    orcpt: str | None = None  # RFC 3461 ORCPT "addr-type;address"
    index: int | None = None  # the recipient's index in the sending node's queue file (LMTP XDELIVERYID)


@dataclass(slots=True)
class Envelope:
    sender: str  # "" for the null sender
    recipients: list[EnvelopeRecipient] = field(default_factory=list)
    ret: str | None = None  # RFC 3461 RET: FULL | HDRS
    envid: str | None = None  # RFC 3461 ENVID
    body_type: str | None = None  # 7BIT | 8BITMIME
    smtputf8: bool = False
    size_hint: int | None = None  # SIZE= as declared by the client
    delivery: str | None = None  # LMTP XDELIVERYID: the sending node's "<queue id>.<arrival>.<attempts>"


@runtime_checkable
class MessageSink(Protocol):
    """Where one message's bytes go. ``commit`` returns only once the message is durable."""

    queue_id: str

    async def write(self, data: bytes) -> None: ...

    async def commit(self) -> Reply: ...

    async def abort(self) -> None: ...


@runtime_checkable
class RecipientSink(MessageSink, Protocol):
    """A sink that answers for each recipient on its own (LMTP, RFC 2033 §4.2): ``commit_each`` returns
    one reply per envelope recipient, in RCPT order, each given only once that recipient's copy is
    durable. An LMTP listener whose sink has only ``commit`` repeats that one reply for everyone."""

    async def commit_each(self) -> list[Reply]: ...


@runtime_checkable
class Backend(Protocol):
    async def check_sender(self, session: SessionInfo, address: str, params: MailParams) -> Reply | None:
        """None accepts the sender (250 2.1.0 Ok)."""
        ...

    async def check_recipient(self, session: SessionInfo, address: str, params: RcptParams) -> Reply | None:
        """None accepts the recipient (250 2.1.5 Ok); e.g. 550 5.1.1, 554 5.7.1, 452 4.2.2 refuse it."""
        ...

    async def open_message(self, session: SessionInfo, envelope: Envelope) -> MessageSink:
        """A sink whose ``queue_id`` is already known (it goes into the Received: header)."""
        ...

    async def authenticate(self, session: SessionInfo, mechanism: str, username: str, password: str) -> str | None:
        """The authenticated user name, or None when the credentials are wrong."""
        ...

    async def refuse_login(self, session: SessionInfo, mechanism: str, username: str) -> None:
        """A login the engine refused before any password check (PLAIN naming another user as authorization
        identity): count it as a failed login, as a wrong password is."""
        ...
