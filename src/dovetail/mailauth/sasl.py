"""SASL for IMAP AUTHENTICATE and SMTP AUTH: one server-side exchange, sans I/O.

A protocol engine starts a :class:`SaslExchange` with the mechanism the client named and its initial
response (SASL-IR, ``AUTH PLAIN <ir>``; ``=`` is an empty one), then feeds it each client line as
sent (base64 text, or ``*`` to cancel). Each call returns one step: a :class:`Challenge` to send
(IMAP ``+ ``, SMTP ``334``), the final :class:`Credentials` to check, or a :class:`SaslFailure`
whose :class:`Reason` the engine maps to its own reply. Input never raises: bad base64, bad UTF-8,
misplaced NULs and over-long responses are failures like any other.

One rule for the authorization identity, for every protocol: a PLAIN authzid that is not empty and
differs from the authcid is refused (``Reason.AUTHZID``), as Dovecot does without master users, and
before any password is checked. Dovecot counts such a refusal as a failed login for its auth penalty,
so the engines do too.

Mechanisms are classes: PLAIN (RFC 4616) and LOGIN (draft-murchison-sasl-login) today. XOAUTH2 and
OAUTHBEARER (RFC 7628) are meant to be added later as further :class:`Mechanism` subclasses in
:data:`MECHANISMS`, returning credentials that carry a bearer token in place of the password (and an
error challenge before their failure, which a multi-step exchange already allows).

Hand-written rather than on ``pysasl``: its server side replays every response through
``server_attempt`` and signals a challenge by raising, leaves base64, ``*`` and size limits to the
caller and lets bad UTF-8 escape as ``UnicodeDecodeError``; what it would do for us is the few lines
that split a PLAIN or LOGIN response.
"""

from __future__ import annotations

import base64
import binascii
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import Enum
from typing import ClassVar

MAX_LINE = 16384  # octets of one base64 client line (Dovecot's auth protocol line is 16 KiB too)
MAX_FIELD = 1024  # octets of one PLAIN/LOGIN field (user names and passwords are far shorter)


class Reason(Enum):
    UNSUPPORTED = "unsupported mechanism"
    CANCELLED = "cancelled by the client"
    BAD_BASE64 = "invalid base64"
    BAD_UTF8 = "invalid UTF-8"
    MALFORMED = "malformed response"
    TOO_LONG = "response too long"
    AUTHZID = "authorization identity refused"


@dataclass(frozen=True, slots=True)
class Challenge:
    """Send this to the client and wait for its next line."""

    data: bytes

    @property
    def base64(self) -> str:
        return base64.b64encode(self.data).decode("ascii")


@dataclass(frozen=True, slots=True)
class Credentials:
    """The exchange is complete: check ``password`` for ``authcid``."""

    mechanism: str
    authcid: str
    password: str = field(repr=False)  # kept out of logs and tracebacks
    authzid: str = ""  # only ever empty or equal to authcid: others are refused


@dataclass(frozen=True, slots=True)
class SaslFailure:
    """The exchange is over without credentials; ``authcid`` is set when the client named one."""

    reason: Reason
    text: str
    authcid: str = ""


Step = Challenge | Credentials | SaslFailure


class Mechanism(ABC):
    """One server-side mechanism: decoded client responses in, steps out."""

    name: ClassVar[str]

    def first_challenge(self) -> bytes:
        """What to send when the client gave no initial response."""
        return b""

    @abstractmethod
    def respond(self, data: bytes) -> Step:
        """One decoded client response."""


def _field(raw: bytes, what: str) -> str | SaslFailure:
    if len(raw) > MAX_FIELD:
        return SaslFailure(Reason.TOO_LONG, f"{what} too long")
    if b"\0" in raw:
        return SaslFailure(Reason.MALFORMED, f"NUL in {what}")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return SaslFailure(Reason.BAD_UTF8, f"{what} is not UTF-8")


class Plain(Mechanism):
    """RFC 4616: ``[authzid] NUL authcid NUL passwd`` in one response."""

    name = "PLAIN"

    def respond(self, data: bytes) -> Step:
        parts = data.split(b"\0")
        if len(parts) != 3:
            return SaslFailure(Reason.MALFORMED, "Invalid PLAIN response")
        fields = [_field(raw, what) for raw, what in zip(parts, ("authzid", "authcid", "password"), strict=True)]
        for f in fields:
            if isinstance(f, SaslFailure):
                return f
        authzid, authcid, password = (str(f) for f in fields)
        if not authcid:
            return SaslFailure(Reason.MALFORMED, "Empty authentication identity")
        if authzid and authzid != authcid:
            return SaslFailure(Reason.AUTHZID, "Authorization as another user is not allowed", authcid)
        return Credentials(self.name, authcid, password, authzid)


class Login(Mechanism):
    """The LOGIN mechanism: ``Username:``, then ``Password:``; an initial response is the user name."""

    name = "LOGIN"

    def __init__(self) -> None:
        self.username: str | None = None

    def first_challenge(self) -> bytes:
        return b"Username:"

    def respond(self, data: bytes) -> Step:
        what = "user name" if self.username is None else "password"
        text = _field(data, what)
        if isinstance(text, SaslFailure):
            return text
        if self.username is None:
            if not text:
                return SaslFailure(Reason.MALFORMED, "Empty user name")
            self.username = text
            return Challenge(b"Password:")
        return Credentials(self.name, self.username, text)


MECHANISMS: dict[str, type[Mechanism]] = {m.name: m for m in (Plain, Login)}


class SaslExchange:
    """One authentication exchange; ``start`` once, then ``receive`` each line until a final step."""

    def __init__(self, mechanisms: dict[str, type[Mechanism]] | None = None, max_line: int = MAX_LINE) -> None:
        self.mechanisms = MECHANISMS if mechanisms is None else mechanisms
        self.max_line = max_line
        self.mechanism: Mechanism | None = None
        self.done = False

    def start(self, mechanism: str, initial: bytes | str | None = None) -> Step:
        """Begin with ``mechanism``; ``initial`` is the initial response as sent (``=`` for empty)."""
        if self.mechanism is not None or self.done:
            raise RuntimeError("exchange already started")
        factory = self.mechanisms.get(mechanism.upper())
        if factory is None:
            return self._final(SaslFailure(Reason.UNSUPPORTED, "Unsupported authentication mechanism"))
        self.mechanism = factory()
        if initial is None:
            return Challenge(self.mechanism.first_challenge())
        raw = _ascii(initial)
        if raw.strip(b" \t") == b"=":  # RFC 4959/4954: an empty initial response
            return self._final(self.mechanism.respond(b""))
        return self._decode_and_respond(raw)

    def receive(self, line: bytes | str) -> Step:
        """The client's answer to the last challenge, as sent (without CRLF)."""
        if self.mechanism is None or self.done:
            raise RuntimeError("no challenge is waiting for an answer")
        raw = _ascii(line)
        if raw.strip(b" \t") == b"*":
            return self._final(SaslFailure(Reason.CANCELLED, "Authentication aborted by client"))
        return self._decode_and_respond(raw)

    def _decode_and_respond(self, raw: bytes) -> Step:
        assert self.mechanism is not None
        if len(raw) > self.max_line:
            return self._final(SaslFailure(Reason.TOO_LONG, "Authentication response too long"))
        try:
            data = base64.b64decode(raw.strip(b" \t"), validate=True)
        except (binascii.Error, ValueError):
            return self._final(SaslFailure(Reason.BAD_BASE64, "Invalid base64 data"))
        return self._final(self.mechanism.respond(data))

    def _final(self, step: Step) -> Step:
        if not isinstance(step, Challenge):
            self.done = True
        return step


def _ascii(line: bytes | str) -> bytes:
    """Base64 text is ASCII; anything else becomes bytes that fail to decode rather than an exception."""
    if isinstance(line, str):
        return line.encode("utf-8", "surrogatepass")
    return bytes(line)
