"""Build the MIME message of an API send with the stdlib ``email`` package.

text and/or html become multipart/alternative, attachments wrap it in multipart/mixed. We set
Message-ID, Date, MIME-Version and, for campaign mail, Reply-To with a reply token and the
one-click unsubscribe pair List-Unsubscribe + List-Unsubscribe-Post (RFC 8058: the POST form is
only valid next to an https URI, and both headers are covered by the DKIM signature).
"""

from __future__ import annotations

import base64
import binascii
import email.policy
import email.utils
import os
import re
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.message import EmailMessage

from dovetail.directory.addresses import AddressError, normalize_address

# Headers a caller may not set: we own them, or they would break the envelope or the signature.
RESERVED = {"from", "to", "cc", "bcc", "message-id", "date", "mime-version", "content-type",
            "content-transfer-encoding", "dkim-signature", "received", "return-path", "reply-to",
            "list-unsubscribe", "list-unsubscribe-post", "sender", "resent-from", "resent-sender", "resent-to",
            "resent-cc", "resent-bcc", "resent-date", "resent-message-id", "authentication-results",
            "arc-seal", "arc-message-signature", "arc-authentication-results", "received-spf"}
_HEADER_NAME = re.compile(r"[!-9;-~]{1,76}")
MAX_ATTACHMENTS = 20
MAX_ATTACHMENT_BYTES = 20 * 1024 * 1024
MAX_HEADERS = 50


class ComposeError(ValueError):
    """A request that cannot become a correct message; the text says which field is wrong."""


@dataclass
class Attachment:
    filename: str
    content_type: str
    content_b64: str


@dataclass
class Draft:
    from_: str
    to: list[str]
    subject: str
    cc: list[str] = field(default_factory=list)
    bcc: list[str] = field(default_factory=list)
    text: str | None = None
    html: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    attachments: list[Attachment] = field(default_factory=list)
    reply_to: str | None = None


def parse_mailbox(text: str, what: str) -> tuple[str, str]:
    """(display name, normalized address) from ``Name <a@b>`` or ``a@b``."""
    if any(c in text for c in "\r\n\0"):
        raise ComposeError(f"{what}: line breaks are not allowed")
    name, addr = email.utils.parseaddr(text)
    if not addr or "@" not in addr:
        raise ComposeError(f"{what}: {text!r} is not an address")
    try:
        return name, normalize_address(addr)
    except AddressError as exc:
        raise ComposeError(f"{what}: {exc}") from None


def new_message_id(domain: str) -> str:
    return f"<{base64.b32encode(os.urandom(15)).decode().lower()}@{domain}>"


def new_token() -> str:
    """A token for reply+<token>@ and unsubscribe links: lowercase (local parts are case-folded)."""
    return base64.b32encode(os.urandom(10)).decode().lower()


def verp_address(token: str, domain: str) -> str:
    """The envelope sender of an API message, ``bounce+<token>@<sender domain>`` (VERP): a bounce
    that comes back days later names its message and recipient by the address it is sent to."""
    return f"bounce+{token}@{domain}"


def _addr(name: str, address: str) -> Address:
    local, _, domain = address.rpartition("@")
    return Address(display_name=name, username=local, domain=domain)


def build(draft: Draft, *, message_id: str, unsubscribe: list[str] | None = None) -> EmailMessage:
    """The message; raises ComposeError for bad input. ``unsubscribe`` holds mailto:/https: URIs."""
    from_name, from_addr = parse_mailbox(draft.from_, "from")
    if not draft.to and not draft.cc and not draft.bcc:
        raise ComposeError("to: at least one recipient is needed")
    if draft.text is None and draft.html is None:
        raise ComposeError("text or html: a message needs a body")
    if len(draft.headers) > MAX_HEADERS:
        raise ComposeError(f"headers: at most {MAX_HEADERS}")
    if any(c in draft.subject for c in "\r\n\0"):
        raise ComposeError("subject: line breaks are not allowed")
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = _addr(from_name, from_addr)
    if draft.to:
        msg["To"] = [_addr(*parse_mailbox(a, "to")) for a in draft.to]
    if draft.cc:
        msg["Cc"] = [_addr(*parse_mailbox(a, "cc")) for a in draft.cc]
    msg["Subject"] = draft.subject
    msg["Date"] = email.utils.formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = message_id
    if draft.reply_to:
        msg["Reply-To"] = _addr(*parse_mailbox(draft.reply_to, "reply_to"))
    if unsubscribe:
        msg["List-Unsubscribe"] = ", ".join(f"<{u}>" for u in unsubscribe)
        if any(u.startswith("https://") for u in unsubscribe):
            msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    for name, value in draft.headers.items():
        if not _HEADER_NAME.fullmatch(name) or name.lower() in RESERVED:
            raise ComposeError(f"headers: {name!r} may not be set")
        if any(c in value for c in "\r\n\0") or len(value) > 998:
            raise ComposeError(f"headers: value of {name!r} has a line break or is too long")
        msg[name] = value
    if draft.text is not None:
        msg.set_content(draft.text, subtype="plain", cte="quoted-printable")
        if draft.html is not None:
            msg.add_alternative(draft.html, subtype="html", cte="quoted-printable")
    else:
        msg.set_content(draft.html or "", subtype="html", cte="quoted-printable")
    if len(draft.attachments) > MAX_ATTACHMENTS:
        raise ComposeError(f"attachments: at most {MAX_ATTACHMENTS}")
    for att in draft.attachments:
        if any(c in att.filename for c in "\r\n\0/\\") or not att.filename:
            raise ComposeError(f"attachments: bad file name {att.filename!r}")
        maintype, _, subtype = att.content_type.partition("/")
        if not re.fullmatch(r"[a-z0-9.+-]+", maintype or "x!") or not re.fullmatch(r"[a-z0-9.+-]+", subtype or "x!"):
            raise ComposeError(f"attachments: bad content type {att.content_type!r}")
        try:
            data = base64.b64decode(att.content_b64, validate=True)
        except (binascii.Error, ValueError):
            raise ComposeError(f"attachments: {att.filename!r} is not valid base64") from None
        if len(data) > MAX_ATTACHMENT_BYTES:
            raise ComposeError(f"attachments: {att.filename!r} is larger than {MAX_ATTACHMENT_BYTES} bytes")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=att.filename)
    return msg


_VAR = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]{0,63})\s*\}\}")


def render(template: str | None, variables: dict[str, str]) -> str | None:
    """``{{name}}`` substitution for batch sends; unknown names stay as they are."""
    if template is None:
        return None
    return _VAR.sub(lambda m: str(variables.get(m.group(1), m.group(0))), template)
