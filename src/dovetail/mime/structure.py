"""ENVELOPE and BODYSTRUCTURE (RFC 3501 7.4.2) from a parsed part tree, as IMAP-ready data.

The result is nested lists of ``str``/``int``/``None`` that :func:`dovetail.mime.imapdata.to_imap`
serialises. Header text is kept raw (encoded words undecoded, 8-bit bytes kept through
``surrogateescape``), because IMAP sends it that way.
"""

from __future__ import annotations

import re
from typing import Any

from dovetail.mime.address import parse_address_list
from dovetail.mime.parser import Header, Part, parse_disposition


def _nstring(header: Header, name: str) -> str | None:
    value = header.get(name)
    return value if value else None


def _present(header: Header, name: str) -> str | None:
    """The value when the field exists (possibly ""), None when absent."""
    return header.get(name)


_WS = re.compile(r"[ \t]+")


def for_humans(value: str | None) -> str | None:
    """Whitespace cleaned as IMAP servers show subjects and names (runs of blanks -> one space)."""
    return None if value is None else _WS.sub(" ", value).strip(" ")


def envelope(header: Header) -> list[Any]:
    """(date subject from sender reply-to to cc bcc in-reply-to message-id)."""
    frm = parse_address_list(header.get("from"))
    sender = parse_address_list(header.get("sender")) or frm
    reply_to = parse_address_list(header.get("reply-to")) or frm
    return [
        _present(header, "date"),
        for_humans(_present(header, "subject")),
        frm,
        sender,
        reply_to,
        parse_address_list(header.get("to")),
        parse_address_list(header.get("cc")),
        parse_address_list(header.get("bcc")),
        _present(header, "in-reply-to"),
        _present(header, "message-id"),
    ]


def _params(pairs: list[tuple[str, str]]) -> list[str] | None:
    flat: list[str] = []
    for k, v in pairs:
        flat += [k, v]
    return flat or None


def _language(header: Header) -> Any:
    value = header.get("content-language")
    if not value:
        return None
    langs = [x.strip() for x in value.replace(";", ",").split(",") if x.strip()]
    return langs or None


def _extension(header: Header) -> list[Any]:
    disp = parse_disposition(header.get("content-disposition"))
    disposition = [disp[0], _params(disp[1])] if disp else None
    return [disposition, _language(header), _nstring(header, "content-location")]


def bodystructure(data: bytes, part: Part, extensible: bool = True) -> list[Any]:
    """BODYSTRUCTURE (``extensible=True``) or BODY of ``part``."""
    ct = part.ctype
    if part.is_multipart:
        kids = [bodystructure(data, c, extensible) for c in part.children]
        if not kids:
            kids = [_empty_text(extensible)]
        out: list[Any] = [*kids, ct.subtype]
        if extensible:
            out += [_params(ct.params), *_extension(part.header)]
        return out
    h = part.header
    size = part.end - part.body_start
    params = ct.params
    mt = ct.maintype.lower()
    if mt == "text" and not any(k.lower() == "charset" for k, _v in params):
        params = [*params, ("charset", "us-ascii")]
    maintype, subtype = ct.maintype, ct.subtype
    if (
        (maintype.lower(), subtype.lower()) == ("text", "plain")
        and len(params) == 1
        and params[0][0].lower() == "charset"
        and params[0][1].lower() == "us-ascii"
    ):
        maintype, subtype, params = "text", "plain", [("charset", "us-ascii")]
    encoding = _nstring(h, "content-transfer-encoding") or "7bit"
    out = [
        maintype,
        subtype,
        _params(params),
        _nstring(h, "content-id"),
        _nstring(h, "content-description"),
        encoding,
        size,
    ]
    if part.message is not None:
        inner = part.message
        out += [envelope(inner.header), bodystructure(data, inner, extensible), part.lines]
    elif mt == "text":
        out.append(part.lines)
    if extensible:
        out += [_nstring(h, "content-md5"), *_extension(h)]
    return out


def _empty_text(extensible: bool) -> list[Any]:
    out: list[Any] = ["text", "plain", ["charset", "us-ascii"], None, None, "7bit", 0, 0]
    if extensible:
        out += [None, None, None, None]
    return out
