"""Parse an inbound message once into the facts every later step needs.

The stdlib ``email`` package with the ``compat32`` policy: it is the fastest of its policies and
never raises on malformed headers; header words are decoded here with ``email.header``. Every size a
sender controls is capped: the raw message, the number of MIME parts, headers and body text, and how
deep the MIME structure nests (see :mod:`.depth`).
"""

from __future__ import annotations

import datetime as dt
import email
import email.header
import email.message
import email.parser
import email.utils
from dataclasses import dataclass, field
from typing import Any

from ..mailauth.headers import authserv_id as authserv_id_of
from ..mailauth.results import parse_ours
from .depth import bound_depth
from .text import msgid_list, normalize_msgid

MAX_RAW_BYTES = 25 * 1024 * 1024
MAX_PARTS = 500
MAX_HEADERS = 300
MAX_HEADER_CHARS = 4000
MAX_BODY_CHARS = 1_000_000
MAX_ADDRESSES = 200


def decode_words(value: Any) -> str:
    """A header value with RFC 2047 words decoded; undecodable bytes replaced, never an exception."""
    if value is None:
        return ""
    if isinstance(value, email.header.Header):
        value = str(value)
    text = str(value)
    try:
        out = str(email.header.make_header(email.header.decode_header(text)))
    except (email.errors.HeaderParseError, LookupError, UnicodeError, ValueError):
        out = text
    out = out.replace("\r", "").replace("\n", " ")
    return out[:MAX_HEADER_CHARS]


def part_text(part: email.message.Message) -> str:
    """The decoded text of a leaf part, in its declared charset (or UTF-8, then Latin-1)."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        raw = part.get_payload()
        return raw[:MAX_BODY_CHARS] if isinstance(raw, str) else ""
    charset = part.get_content_charset() or "utf-8"
    try:
        text = payload.decode(charset, errors="replace")
    except LookupError:
        text = payload.decode("utf-8", errors="replace")
    return text[:MAX_BODY_CHARS]


def _addresses(msg: email.message.Message, *names: str) -> list[tuple[str, str]]:
    values: list[str] = []
    for name in names:
        values.extend(decode_words(v) for v in (msg.get_all(name) or [])[:50])
    out = []
    for display, addr in email.utils.getaddresses(values)[:MAX_ADDRESSES]:
        addr = addr.strip().strip("<>").lower()
        if "@" in addr and len(addr) <= 320:
            out.append((display, addr))
    return out


def _date(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is None:
        return parsed
    return parsed.astimezone(dt.UTC).replace(tzinfo=None)


@dataclass
class Parsed:
    """One inbound message, parsed once."""

    msg: email.message.Message
    size: int
    truncated: bool
    message_id: str
    in_reply_to: list[str]
    references: list[str]
    from_addr: str
    from_name: str
    to: list[str]
    cc: list[str]
    delivered_to: list[str]
    return_path: str | None  # None: no Return-Path header; "": the null sender <>
    subject: str
    date: dt.datetime | None
    headers: list[tuple[str, str]]
    text: str
    html: str
    attachments: list[dict[str, Any]]
    content_type: str
    report_type: str
    auth_results: list[str]  # the Authentication-Results headers our MX wrote (authserv-id = server.hostname)
    auth: dict[str, Any]  # their verdicts: {spf, dkim: [{domain, selector, result}], dmarc: {...}, arc}
    reports: list[email.message.Message] = field(default_factory=list)  # parts of a multipart/report
    depth_limited: bool = False  # MIME nested deeper than the bound: deeper parts were read as opaque leaves

    def header(self, name: str) -> str:
        return decode_words(self.msg.get(name))

    def all_recipients(self) -> list[str]:
        return list(dict.fromkeys(self.to + self.cc + self.delivered_to))


def parse(raw: bytes, authserv_id: str = "") -> Parsed:
    """``authserv_id``: whose Authentication-Results to trust (ours); others' are ignored, they can be forged."""
    truncated = len(raw) > MAX_RAW_BYTES
    if truncated:
        raw = raw[:MAX_RAW_BYTES]
    raw, depth_limited = bound_depth(raw)
    try:
        msg = email.message_from_bytes(raw)
        text, html, attachments, reports = _walk(msg)
    except RecursionError:
        # A structure the bounded look did not see as deep (the two parsers disagree on broken
        # boundaries): its header alone is read, the body is one opaque leaf.
        depth_limited = True
        msg = email.parser.BytesParser().parsebytes(raw, headersonly=True)
        text, html, attachments, reports = "", "", [], []
    headers = [(k, decode_words(v)) for k, v in msg.items()[:MAX_HEADERS]]
    rp = msg.get("Return-Path")
    return_path = None if rp is None else (email.utils.parseaddr(str(rp))[1].lower() or "")
    from_list = _addresses(msg, "From")
    ctype = msg.get_content_type()
    return Parsed(
        msg=msg, size=len(raw), truncated=truncated,
        message_id=normalize_msgid(str(msg.get("Message-ID") or "")),
        in_reply_to=msgid_list(str(msg.get("In-Reply-To") or "")),
        references=msgid_list(str(msg.get("References") or "")),
        from_addr=from_list[0][1] if from_list else "",
        from_name=decode_words(from_list[0][0]) if from_list else "",
        to=[a for _, a in _addresses(msg, "To")],
        cc=[a for _, a in _addresses(msg, "Cc")],
        delivered_to=[a for _, a in _addresses(msg, "Delivered-To", "X-Original-To", "Envelope-To")],
        return_path=return_path,
        subject=decode_words(msg.get("Subject")),
        date=_date(str(msg.get("Date") or "")),
        headers=headers, text=text, html=html, attachments=attachments,
        content_type=ctype,
        report_type=_param(msg, "report-type").lower() if ctype == "multipart/report" else "",
        auth_results=(ours := _our_auth_results(msg, authserv_id)),
        auth=parse_ours(ours, authserv_id),
        reports=reports,
        depth_limited=depth_limited,
    )


def _our_auth_results(msg: email.message.Message, authserv_id: str) -> list[str]:
    if not authserv_id:
        return []
    values = [decode_words(v) for v in (msg.get_all("Authentication-Results") or [])[:20]]
    return [v for v in values if authserv_id_of(v.encode()) == authserv_id.lower().rstrip(".")]


def _param(msg: email.message.Message, name: str) -> str:
    """A Content-Type parameter as text: RFC 2231 values (charset, language, text) collapsed to the text."""
    value = msg.get_param(name)
    return "" if value is None else email.utils.collapse_rfc2231_value(value)


def _walk(msg: email.message.Message) -> tuple[str, str, list[dict[str, Any]], list[email.message.Message]]:
    """Body text and HTML (first of each outside attachments), attachments, and report sub-parts."""
    text = html = ""
    attachments: list[dict[str, Any]] = []
    reports: list[email.message.Message] = []
    stack: list[email.message.Message] = [msg]
    seen = 0
    while stack and seen < MAX_PARTS:
        part = stack.pop(0)
        seen += 1
        ctype = part.get_content_type()
        disposition = (part.get_content_disposition() or "").lower()
        filename = decode_words(part.get_filename()) if part.get_filename() else ""
        if part.is_multipart() and ctype.startswith("multipart/"):
            children = part.get_payload()
            if isinstance(children, list):
                stack[0:0] = [c for c in children[:MAX_PARTS] if isinstance(c, email.message.Message)]
            continue
        if ctype in ("message/delivery-status", "message/feedback-report", "message/rfc822",
                     "text/rfc822-headers", "message/global", "message/global-headers",
                     "message/global-delivery-status") and part is not msg:
            reports.append(part)
            if ctype in ("message/rfc822", "message/global"):
                attachments.append({"name": filename or "message.eml", "content_type": ctype,
                                    "size": _size(part)})
            continue
        if disposition == "attachment" or (filename and not ctype.startswith("text/")) or (
                filename and disposition != "inline"):
            attachments.append({"name": filename, "content_type": ctype, "size": _size(part)})
            continue
        if ctype == "text/plain" and not text:
            text = part_text(part)
        elif ctype == "text/html" and not html:
            html = part_text(part)
        elif not ctype.startswith("text/"):
            attachments.append({"name": filename, "content_type": ctype, "size": _size(part)})
    return text, html, attachments[:MAX_PARTS], reports


def _size(part: email.message.Message) -> int:
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        return len(payload)
    raw = part.get_payload()
    if isinstance(raw, list):
        return sum(len(p.as_bytes()) if isinstance(p, email.message.Message) else 0 for p in raw)
    return len(raw.encode("utf-8", "replace")) if isinstance(raw, str) else 0


def report_fields(part: email.message.Message) -> list[dict[str, str]]:
    """Field groups of a message/delivery-status or message/feedback-report part (RFC 3464, RFC 5965).

    The stdlib parses a delivery-status body as a list of header blocks; anything else is parsed here
    from the text, so a malformed part still yields its fields.
    """
    payload = part.get_payload()
    blocks: list[dict[str, str]] = []
    if isinstance(payload, list):
        for block in payload[:MAX_ADDRESSES]:
            if isinstance(block, email.message.Message):
                blocks.append({k.lower(): decode_words(v) for k, v in block.items()[:MAX_HEADERS]})
        if blocks:
            return blocks
    text = part_text(part) if not isinstance(payload, list) else ""
    current: dict[str, str] = {}
    last = ""
    for line in text.replace("\r\n", "\n").split("\n")[:5000]:
        if not line.strip():
            if current:
                blocks.append(current)
                current, last = {}, ""
            continue
        if line[:1] in (" ", "\t") and last:
            current[last] += " " + line.strip()
            continue
        name, sep, value = line.partition(":")
        if sep and name.strip():
            last = name.strip().lower()
            current[last] = (current.get(last, "") + (", " if last in current else "") + value.strip())[:2000]
    if current:
        blocks.append(current)
    return blocks[:MAX_ADDRESSES]


def embedded_headers(part: email.message.Message) -> email.message.Message | None:
    """The original message (or its headers) carried in a report part."""
    ctype = part.get_content_type()
    if ctype in ("message/rfc822", "message/global"):
        inner = part.get_payload()
        if isinstance(inner, list) and inner and isinstance(inner[0], email.message.Message):
            return inner[0]
        return None
    if ctype in ("text/rfc822-headers", "message/global-headers"):
        text = part_text(part)
        return email.message_from_string(text)
    return None
