"""Events the SMTP core emits, as small frozen dataclasses (h11 style).

Every command event must be answered with exactly one ``SmtpConnection.send_reply`` before the
next ``next_event`` call; ``NeedData``, ``DataChunk``, ``DataAbort`` and ``BdatStart`` need no reply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from dovetail.smtp.reply import Reply


@dataclass(frozen=True, slots=True)
class MailParams:
    """ESMTP parameters of MAIL FROM, parsed and validated (RFC 1870, 6152, 6531, 3461, 4954)."""

    size: int | None = None
    body: str | None = None  # "7BIT" | "8BITMIME"
    smtputf8: bool = False
    ret: str | None = None  # "FULL" | "HDRS"
    envid: str | None = None  # xtext-decoded
    auth: str | None = None  # RFC 4954 AUTH=, xtext-decoded ("<>" when unknown)
    delivery: str | None = None  # LMTP between our nodes: XDELIVERYID=<queue id>.<arrival>.<attempts>


@dataclass(frozen=True, slots=True)
class RcptParams:
    """ESMTP parameters of RCPT TO (RFC 3461 DSN)."""

    notify: tuple[str, ...] | None = None  # ("NEVER",) or a subset of SUCCESS, FAILURE, DELAY
    orcpt: str | None = None  # "addr-type;address", address xtext-decoded
    index: int | None = None  # LMTP between our nodes: XDELIVERYID=<recipient index in the sender's queue>


class Event:
    """Base of all events; ``needs_reply`` says whether ``send_reply`` must follow."""

    __slots__ = ()
    needs_reply: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class NeedData(Event):
    """No complete event in the buffer: feed more bytes."""

    needs_reply: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class Helo(Event):
    hostname: str


@dataclass(frozen=True, slots=True)
class Ehlo(Event):
    hostname: str


@dataclass(frozen=True, slots=True)
class Lhlo(Ehlo):
    """LMTP's greeting (RFC 2033 §4.1): answered as EHLO is, with the extension list."""


@dataclass(frozen=True, slots=True)
class Mail(Event):
    address: str  # "" for the null sender <>
    params: MailParams = field(default_factory=MailParams)


@dataclass(frozen=True, slots=True)
class Rcpt(Event):
    address: str
    params: RcptParams = field(default_factory=RcptParams)


@dataclass(frozen=True, slots=True)
class DataStart(Event):
    """DATA was valid in this state; reply 354 to start receiving content, or an error."""


@dataclass(frozen=True, slots=True)
class DataChunk(Event):
    """A bounded piece of message content (dot-unstuffed for DATA, raw for BDAT)."""

    data: bytes
    needs_reply: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class DataAbort(Event):
    """The message is over a limit: drop what was written; ``reply`` is sent when the data ends."""

    reply: Reply
    needs_reply: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class MessageEnd(Event):
    """``<CR><LF>.<CR><LF>`` seen; reply with the commit result."""


@dataclass(frozen=True, slots=True)
class BdatStart(Event):
    """A BDAT chunk begins (RFC 3030); its content follows as DataChunk events."""

    size: int
    last: bool
    first: bool
    needs_reply: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class BdatEnd(Event):
    """A BDAT chunk was fully received; reply 250 (or, when ``last``, the commit result)."""

    size: int
    last: bool


@dataclass(frozen=True, slots=True)
class Rset(Event):
    pass


@dataclass(frozen=True, slots=True)
class Noop(Event):
    pass


@dataclass(frozen=True, slots=True)
class Vrfy(Event):
    argument: str


@dataclass(frozen=True, slots=True)
class Help(Event):
    argument: str


@dataclass(frozen=True, slots=True)
class Quit(Event):
    pass


@dataclass(frozen=True, slots=True)
class StartTls(Event):
    """Reply 220 and then start the TLS handshake; the core drops any pipelined plaintext."""


@dataclass(frozen=True, slots=True)
class AuthChallenge(Event):
    """The SASL exchange wants another client line: reply ``334`` with ``challenge`` (base64)."""

    challenge: str


@dataclass(frozen=True, slots=True)
class Auth(Event):
    """A complete SASL exchange (:mod:`dovetail.mailauth.sasl`): check the credentials, reply 235 or 535."""

    mechanism: str  # upper-cased
    username: str
    password: str = field(repr=False)  # kept out of logs and tracebacks


@dataclass(frozen=True, slots=True)
class AuthRefused(Event):
    """A login refused before any password check (PLAIN naming another user as authorization identity);
    it counts as a failed login. Send ``reply``."""

    mechanism: str
    username: str
    reply: Reply


@dataclass(frozen=True, slots=True)
class ProtocolError(Event):
    """The core rejected input itself; send ``reply``. ``close`` means disconnect after it."""

    reply: Reply
    close: bool = False
