"""Delivery status notifications (RFC 3464) built from a queued message.

Built by hand as bytes rather than with ``email.message``: the returned original must be copied
verbatim (no re-folding or re-encoding of someone else's headers), and the three parts are simple.
"""

from __future__ import annotations

import email.utils
import socket
import time
import uuid
from collections.abc import Sequence
from typing import Literal

from dovetail.queue.envelope import QueueRecipient
from dovetail.queue.qfile import QueuedMessage

DsnKind = Literal["failed", "delayed", "delivered"]
BOUNCE_SIZE_LIMIT = 50_000

_SUBJECTS = {
    "failed": "Undelivered Mail Returned to Sender",
    "delayed": "Delayed Mail (still being retried)",
    "delivered": "Successful Mail Delivery Report",
}
_INTRO = {
    "failed": "I'm sorry to have to inform you that your message could not\r\n"
    "be delivered to one or more recipients. It's attached below.",
    "delayed": "Your message could not be delivered yet to one or more recipients.\r\n"
    "Delivery will be retried; you do not need to resend it.",
    "delivered": "Your message was successfully delivered to the destination(s)\r\n"
    "listed below.",
}


def _clean(text: str) -> str:
    """One header-safe line: no CR/LF, no control characters."""
    return "".join(ch if ch >= " " and ch != "\x7f" else " " for ch in text)


def build_dsn(
    message: QueuedMessage,
    recipients: Sequence[QueueRecipient],
    kind: DsnKind,
    hostname: str | None = None,
    size_limit: int = BOUNCE_SIZE_LIMIT,
) -> bytes:
    """A multipart/report DSN to the envelope sender about ``recipients`` of ``message``.

    RET=HDRS returns the headers only; RET=FULL or none returns the full message when it is under
    ``size_limit`` bytes, else its headers (Postfix's bounce_size_limit). Successes and delays
    return headers only.
    """
    env = message.envelope
    host = hostname or socket.getfqdn()
    boundary = f"{message.queue_id}.{uuid.uuid4().hex[:12]}/{host}"
    now = email.utils.formatdate(localtime=True)
    lines = [
        f"From: MAILER-DAEMON@{host} (Mail Delivery System)",
        f"To: {_clean(env.sender)}",
        f"Subject: {_SUBJECTS[kind]}",
        f"Date: {now}",
        f"Message-ID: <{uuid.uuid4().hex}@{host}>",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary="{boundary}"',
        "Content-Transfer-Encoding: 8bit",
        "",
        "This is a MIME-encapsulated message.",
        "",
        f"--{boundary}",
        "Content-Description: Notification",
        "Content-Type: text/plain; charset=utf-8",
        "",
        f"This is the mail system at host {host}.",
        "",
        _INTRO[kind],
        "",
    ]
    for rcpt in recipients:
        lines.append(f"<{_clean(rcpt.address)}>: {_clean(rcpt.reason or rcpt.dsn_code or kind)}")
    lines += [
        "",
        f"--{boundary}",
        "Content-Description: Delivery report",
        "Content-Type: message/delivery-status",
        "",
        f"Reporting-MTA: dns; {host}",
        f"X-Dovetail-Queue-ID: {message.queue_id}",
    ]
    if env.envid:
        lines.append(f"Original-Envelope-Id: {_clean(env.envid)}")
    lines.append(f"Arrival-Date: {email.utils.formatdate(env.arrival, localtime=True)}")
    for rcpt in recipients:
        lines += ["", f"Final-Recipient: rfc822; {_clean(rcpt.address)}"]
        if rcpt.orcpt:
            lines.append(f"Original-Recipient: {_clean(rcpt.orcpt)}")
        status = rcpt.dsn_code or {"failed": "5.0.0", "delayed": "4.0.0", "delivered": "2.0.0"}[kind]
        lines += [f"Action: {kind}", f"Status: {_clean(status)}"]
        if rcpt.relay:
            lines.append(f"Remote-MTA: dns; {_clean(rcpt.relay)}")
        if rcpt.reason:
            kind_of = "smtp" if rcpt.reason[:3].isdigit() else "X-Dovetail"
            lines.append(f"Diagnostic-Code: {kind_of}; {_clean(rcpt.reason)}")
        if kind == "delayed":
            lines.append(
                "Will-Retry-Until: "
                + email.utils.formatdate(env.next_attempt or time.time(), localtime=True)
            )
    lines.append("")
    full = kind == "failed" and env.ret != "HDRS" and message.size <= size_limit
    lines += [
        f"--{boundary}",
        "Content-Description: " + ("Undelivered Message" if full else "Message Headers"),
        "Content-Type: " + ("message/rfc822" if full else "text/rfc822-headers"),
        "Content-Transfer-Encoding: 8bit",
        "",
    ]
    head = "\r\n".join(lines).encode() + b"\r\n"
    original = message.read_message() if full else message.read_headers()
    original = original.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if not original.endswith(b"\r\n"):
        original += b"\r\n"
    return head + original + f"\r\n--{boundary}--\r\n".encode()
