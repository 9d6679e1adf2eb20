"""The ``Received:`` trace header the engine prepends to each message (RFC 5321 §4.4)."""

from __future__ import annotations

import email.utils
import functools
import ipaddress
import time

from dovetail.smtp.backend import SessionInfo

_date = (0, "")


def _date_now() -> str:
    """The RFC 5322 date of this second, formatted once per second (it is on every message's path)."""
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, email.utils.formatdate(now, localtime=True))
    return _date[1]


@functools.lru_cache(maxsize=1024)
def _literal(ip: str) -> str:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if addr.version == 6:
        mapped = addr.ipv4_mapped
        return str(mapped) if mapped else f"IPv6:{addr}"
    return str(addr)


def _clean(text: str) -> str:
    """A peer-supplied token made safe for a header: no controls, no comment breakers."""
    if text.isprintable() and "(" not in text and ")" not in text and "\\" not in text:
        return text[:255]
    return "".join(ch if ch.isprintable() and ch not in "()\\" else "?" for ch in text)[:255]


def received_header(
    session: SessionInfo,
    hostname: str,
    protocol: str,
    queue_id: str,
    recipients: list[str],
    now: float | None = None,
) -> bytes:
    """``Received: from helo (name [ip]) ... by host (Dovetail) with PROTO id QID [for <rcpt>]; date``.

    ``for`` is given only with one recipient, so a multi-recipient message does not leak its Bcc list.
    """
    helo = _clean(session.helo or "unknown")
    lines = [f"Received: from {helo} ({_clean(session.client_name)} [{_literal(session.client_ip)}])"]
    if session.tls and session.tls_version:
        lines.append(f"\t(using {session.tls_version} with cipher {_clean(session.tls_cipher or 'unknown')})")
    lines.append(f"\tby {hostname} (Dovetail) with {protocol} id {queue_id}")
    date = _date_now() if now is None else email.utils.formatdate(now, localtime=True)
    if len(recipients) == 1:
        lines.append(f"\tfor <{_clean(recipients[0])}>; {date}")
    else:
        lines[-1] += ";"
        lines.append(f"\t{date}")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")
