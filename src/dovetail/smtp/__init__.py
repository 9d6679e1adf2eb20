"""The SMTP engine: a sans-I/O protocol core (``protocol``), its asyncio server (``server``) and
the backend interface (``backend``) through which the MX and submission listeners plug in policy
and the queue."""

from __future__ import annotations

from dovetail.smtp.backend import Backend, Envelope, EnvelopeRecipient, MessageSink, SessionInfo
from dovetail.smtp.limits import Limits
from dovetail.smtp.protocol import SmtpConnection
from dovetail.smtp.reply import Reply
from dovetail.smtp.server import SmtpServer

__all__ = [
    "Backend",
    "Envelope",
    "EnvelopeRecipient",
    "Limits",
    "MessageSink",
    "Reply",
    "SessionInfo",
    "SmtpConnection",
    "SmtpServer",
]
