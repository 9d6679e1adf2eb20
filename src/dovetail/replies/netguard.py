"""Webhook targets may not reach this host's network: no loopback, private, link-local or metadata address.

A tenant chooses its webhook URL, so without this guard the dispatcher would post (and report the answer
of) any service the server can reach: ``127.0.0.1:8025``'s admin API, a cloud metadata endpoint on
``169.254.169.254``, a database on the private network. The URL is checked when it is added (literal
addresses and names that already resolve) and again at every delivery after DNS resolution; the
connection then goes to the address that was checked, so a name that re-resolves between the check and
the connect (DNS rebinding) gains nothing (:mod:`.webhook_client` connects to what
:func:`resolve_public` returned). ``replies.webhook_allow_private = true`` lifts the rule for
setups whose receivers live on a private network.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class BlockedTarget(ValueError):
    """A webhook URL whose host is, or resolves to, a non-public address."""


class Unresolvable(OSError):
    """A webhook host that does not resolve (at delivery: tried again later)."""


def is_public(ip: IpAddress) -> bool:
    """True for a globally routable unicast address (an IPv4-mapped IPv6 address is judged as IPv4)."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return is_public(ip.ipv4_mapped)
        if ip.sixtofour is not None and not is_public(ip.sixtofour):
            return False
    return ip.is_global and not ip.is_multicast


def _literal(host: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _refuse_name(host: str) -> None:
    name = host.rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost") or not name:
        raise BlockedTarget(f"webhook host {host!r} is this machine")


def check_addresses(host: str, addresses: list[str]) -> None:
    for addr in addresses:
        ip = _literal(addr.split("%", 1)[0])
        if ip is None or not is_public(ip):
            raise BlockedTarget(f"webhook host {host!r} resolves to non-public address {addr}")


def check_url(url: str) -> None:
    """Add-time check: a literal address must be public, a name that resolves must resolve to public ones.

    A name that does not resolve yet is let through; delivery checks it again.
    """
    host = urlsplit(url).hostname or ""
    _refuse_name(host)
    ip = _literal(host)
    if ip is not None:
        check_addresses(host, [str(ip)])
        return
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return
    check_addresses(host, [str(info[4][0]) for info in infos])


async def resolve_public(host: str, port: int) -> str:
    """The first address of ``host`` once every address it resolves to was found public."""
    _refuse_name(host)
    ip = _literal(host)
    if ip is not None:
        check_addresses(host, [str(ip)])
        return str(ip)
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise Unresolvable(f"cannot resolve {host!r}: {exc}") from None
    addresses = [str(info[4][0]) for info in infos]
    if not addresses:
        raise Unresolvable(f"cannot resolve {host!r}")
    check_addresses(host, addresses)
    return addresses[0]
