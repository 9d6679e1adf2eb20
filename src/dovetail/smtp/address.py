"""RFC 5321 envelope syntax: reverse/forward paths and ESMTP parameters.

Hand-written because ``email.utils`` parses RFC 5322 header addresses, a different (and far looser)
grammar; the envelope needs exact RFC 5321 §4.1.2 rules, RFC 6531 UTF-8 extensions and length limits.
"""

from __future__ import annotations

import re

from dovetail.smtp.events import MailParams, RcptParams
from dovetail.smtp.reply import Reply

MAX_LOCAL = 64
# SRS addresses (``SRS0=HHHH=TT=host=user``) carry a whole address in their local part and are often
# longer than 64 octets; forwarders (postsrsd, ours) make them, so they are accepted up to the path limit,
# as RFC 5321 §4.5.3.1 asks ("implementation techniques that impose no limits ... should be used").
_SRS_LOCAL = re.compile(r"SRS[01][-+=]", re.IGNORECASE)
MAX_DOMAIN = 255
MAX_PATH = 256

_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~\-"
_UTF8 = r"\u0080-\U0010ffff"
_DOT_STRING = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*\Z")
_DOT_STRING_UTF8 = re.compile(rf"[{_ATEXT}{_UTF8}]+(?:\.[{_ATEXT}{_UTF8}]+)*\Z")
_QUOTED = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"\Z')
_QUOTED_UTF8 = re.compile(rf'"(?:[\x20\x21\x23-\x5b\x5d-\x7e{_UTF8}]|\\[\x20-\x7e])*"\Z')
_SUBDOMAIN = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"{_SUBDOMAIN}(?:\.{_SUBDOMAIN})*\Z")
_SUBDOMAIN_UTF8 = rf"[A-Za-z0-9{_UTF8}](?:[A-Za-z0-9{_UTF8}-]*[A-Za-z0-9{_UTF8}])?"
_DOMAIN_UTF8 = re.compile(rf"{_SUBDOMAIN_UTF8}(?:\.{_SUBDOMAIN_UTF8})*\Z")
_IPV4 = re.compile(r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}\Z")
_GENERAL_LITERAL = re.compile(r"[A-Za-z0-9-]*[A-Za-z0-9]:[\x21-\x5a\x5e-\x7e]+\Z")
_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*\Z")
_VALUE = re.compile(r"[\x21-\x3c\x3e-\x7e]+\Z")
_VALUE_UTF8 = re.compile(rf"[\x21-\x3c\x3e-\x7e{_UTF8}]+\Z")
_XTEXT = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*\Z")
_ADDR_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*\Z")


class AddressError(ValueError):
    """Bad envelope syntax; ``reply`` is the 501/555 to send."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


def _is_ascii(text: str) -> bool:
    return text.isascii()


def _valid_literal(body: str) -> bool:
    if _IPV4.match(body):
        return True
    if body[:5].lower() == "ipv6:":
        import ipaddress

        try:
            ipaddress.IPv6Address(body[5:])
        except ValueError:
            return False
        return True
    return bool(_GENERAL_LITERAL.match(body))


def valid_domain(domain: str, utf8: bool) -> bool:
    """A Domain or an address-literal of RFC 5321 §4.1.2 (U-labels allowed when ``utf8``)."""
    if not domain or len(domain.encode("utf-8")) > MAX_DOMAIN:
        return False
    if domain.startswith("[") and domain.endswith("]"):
        return _valid_literal(domain[1:-1])
    return bool((_DOMAIN_UTF8 if utf8 else _DOMAIN).match(domain))


def split_mailbox(mailbox: str) -> tuple[str, str]:
    """Split ``local@domain`` at the last ``@`` outside a quoted local part."""
    if mailbox.startswith('"'):
        i = 1
        while i < len(mailbox):
            ch = mailbox[i]
            if ch == "\\":
                i += 2
                continue
            if ch == '"':
                break
            i += 1
        rest = mailbox[i + 1 :]
        if not rest.startswith("@"):
            return mailbox, ""
        return mailbox[: i + 1], rest[1:]
    local, at, domain = mailbox.rpartition("@")
    if not at:
        return mailbox, ""
    return local, domain


def valid_mailbox(mailbox: str, utf8: bool) -> bool:
    local, domain = split_mailbox(mailbox)
    if not domain or not local:
        return False
    if len(local.encode("utf-8")) > (MAX_PATH if _SRS_LOCAL.match(local) else MAX_LOCAL):
        return False
    if local.startswith('"'):
        if not (_QUOTED_UTF8 if utf8 else _QUOTED).match(local):
            return False
    elif not (_DOT_STRING_UTF8 if utf8 else _DOT_STRING).match(local):
        return False
    return valid_domain(domain, utf8)


def _strip_source_route(inner: str, utf8: bool) -> str | None:
    """Drop an RFC 5321 A-d-l (``@a,@b:``), which servers must accept and ignore (§4.1.1.3, C)."""
    if not inner.startswith("@"):
        return inner
    route, colon, mailbox = inner.partition(":")
    if not colon:
        return None
    for hop in route.split(","):
        if not hop.startswith("@") or not valid_domain(hop[1:], utf8):
            return None
    return mailbox


def parse_path(text: str, *, utf8: bool, null_ok: bool, postmaster_ok: bool = False) -> tuple[str, str]:
    """Parse ``<path>`` at the start of ``text``; return (address, rest-after-path).

    ``utf8`` allows RFC 6531 UTF-8 mailboxes. Raises ValueError with a short reason.
    """
    if not text.startswith("<"):
        raise ValueError("address must be in angle brackets")
    i, in_quote = 1, False
    while i < len(text):
        ch = text[i]
        if in_quote and ch == "\\":
            i += 2
            continue
        if ch == '"':
            in_quote = not in_quote
        elif ch == ">" and not in_quote:
            break
        i += 1
    else:
        raise ValueError("missing closing angle bracket")
    inner, rest = text[1:i], text[i + 1 :]
    if len(text[: i + 1].encode("utf-8")) > MAX_PATH:
        raise ValueError("path too long")
    if rest and not rest.startswith(" "):
        raise ValueError("garbage after address")
    if inner == "":
        if not null_ok:
            raise ValueError("null address not allowed here")
        return "", rest
    mailbox = _strip_source_route(inner, utf8)
    if mailbox is None:
        raise ValueError("bad source route")
    if postmaster_ok and mailbox.lower() == "postmaster":
        return mailbox, rest
    if not utf8 and not _is_ascii(mailbox):
        raise ValueError("UTF-8 address without SMTPUTF8")
    if not valid_mailbox(mailbox, utf8):
        raise ValueError("bad address syntax")
    return mailbox, rest


def xtext_decode(value: str) -> str:
    """RFC 3461 §4 xtext; raises ValueError on a bad escape or character."""
    if not _XTEXT.match(value):
        raise ValueError("bad xtext")
    return re.sub(r"\+([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), value)


def parse_params(text: str, *, utf8: bool) -> dict[str, str | None]:
    """ESMTP ``keyword[=value]`` list (RFC 5321 §4.1.2); keys upper-cased, duplicates refused."""
    params: dict[str, str | None] = {}
    for item in text.split(" "):
        if not item:
            continue
        key, eq, value = item.partition("=")
        if not _KEYWORD.match(key):
            raise ValueError(f"bad parameter {item[:40]!r}")
        if eq and not (_VALUE_UTF8 if utf8 else _VALUE).match(value):
            raise ValueError(f"bad value for {key.upper()}")
        key = key.upper()
        if key in params:
            raise ValueError(f"duplicate parameter {key}")
        params[key] = value if eq else None
    return params


def _syntax(enh: str, text: str) -> AddressError:
    return AddressError(Reply(501, enh, text))


def _unsupported(key: str) -> AddressError:
    return AddressError(Reply(555, "5.5.4", f"Unsupported option: {key}"))


#: ``XDELIVERYID``, an LMTP extension of ours between the nodes of a cluster: the sending node names
#: the queued message (``MAIL FROM:<…> XDELIVERYID=<queue id>.<arrival>.<attempts>``) and each
#: recipient's index in it (``RCPT TO:<…> XDELIVERYID=<n>``), so the receiving node names its Maildir
#: copies after the sender's queue entry. A retry after a connection lost between the copy's commit
#: and its reply then finds the first copy instead of storing a second one (Postfix's lmtp(8) to
#: Dovecot has that duplicate window; a cluster of ours does not).
DELIVERY_ID = re.compile(r"[0-9A-Za-z]{1,64}\.[0-9]{1,12}\.[0-9]{1,6}")


def mail_params(raw: dict[str, str | None], *, esmtp: bool, lmtp: bool = False) -> MailParams:
    """Validate MAIL FROM parameters: SIZE, BODY, SMTPUTF8, RET, ENVID, AUTH (and LMTP's XDELIVERYID)."""
    if raw and not esmtp:
        raise _unsupported(next(iter(raw)))
    size = body = ret = envid = auth = delivery = None
    smtputf8 = False
    for key, value in raw.items():
        if key == "SIZE":
            if value is None or not value.isdigit() or not value.isascii() or len(value) > 20:
                raise _syntax("5.5.4", "Bad SIZE parameter syntax")
            size = int(value)
        elif key == "BODY":
            if value is None or value.upper() not in ("7BIT", "8BITMIME"):
                raise _syntax("5.5.4", "Unsupported BODY parameter value")
            body = value.upper()
        elif key == "SMTPUTF8":
            if value is not None:
                raise _syntax("5.5.4", "SMTPUTF8 takes no value")
            smtputf8 = True
        elif key == "RET":
            if value is None or value.upper() not in ("FULL", "HDRS"):
                raise _syntax("5.5.4", "Bad RET parameter value")
            ret = value.upper()
        elif key == "ENVID":
            try:
                envid = xtext_decode(value or "")
            except ValueError:
                raise _syntax("5.5.4", "Bad ENVID parameter syntax") from None
            if not envid or len(envid) > 100 or not envid.isascii() or not envid.isprintable():
                raise _syntax("5.5.4", "Bad ENVID parameter syntax")
        elif key == "AUTH":
            try:
                auth = xtext_decode(value or "")
            except ValueError:
                raise _syntax("5.5.4", "Bad AUTH parameter syntax") from None
            if not auth:
                raise _syntax("5.5.4", "Bad AUTH parameter syntax")
        elif key == "XDELIVERYID" and lmtp:
            if value is None or not DELIVERY_ID.fullmatch(value):
                raise _syntax("5.5.4", "Bad XDELIVERYID parameter syntax")
            delivery = value
        else:
            raise _unsupported(key)
    return MailParams(size=size, body=body, smtputf8=smtputf8, ret=ret, envid=envid, auth=auth, delivery=delivery)


def rcpt_params(raw: dict[str, str | None], *, esmtp: bool, lmtp: bool = False) -> RcptParams:
    """Validate RCPT TO parameters: NOTIFY, ORCPT (RFC 3461 §4.1, §4.2) (and LMTP's XDELIVERYID)."""
    if raw and not esmtp:
        raise _unsupported(next(iter(raw)))
    notify: tuple[str, ...] | None = None
    orcpt = None
    index: int | None = None
    for key, value in raw.items():
        if key == "NOTIFY":
            items = tuple(v.upper() for v in (value or "").split(","))
            allowed = {"SUCCESS", "FAILURE", "DELAY"}
            ok = items == ("NEVER",) or (
                bool(items) and all(i in allowed for i in items) and len(set(items)) == len(items)
            )
            if not ok:
                raise _syntax("5.5.4", "Bad NOTIFY parameter syntax")
            notify = items
        elif key == "ORCPT":
            addr_type, semi, addr = (value or "").partition(";")
            if not semi or not _ADDR_TYPE.match(addr_type) or not addr:
                raise _syntax("5.5.4", "Bad ORCPT parameter syntax")
            try:
                decoded = addr if addr_type.lower() == "utf-8" else xtext_decode(addr)
            except ValueError:
                raise _syntax("5.5.4", "Bad ORCPT parameter syntax") from None
            if len(decoded) > 500 or not decoded.isprintable():
                raise _syntax("5.5.4", "Bad ORCPT parameter syntax")
            orcpt = f"{addr_type};{decoded}"
        elif key == "XDELIVERYID" and lmtp:
            if value is None or not value.isdigit() or not value.isascii() or len(value) > 6:
                raise _syntax("5.5.4", "Bad XDELIVERYID parameter syntax")
            index = int(value)
        else:
            raise _unsupported(key)
    return RcptParams(notify=notify, orcpt=orcpt, index=index)
