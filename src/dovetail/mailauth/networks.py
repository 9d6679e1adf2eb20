"""Whether a client address lies in configured networks (``auth.trusted_networks``): the one rule for
IMAP's LOGINDISABLED and submission's plaintext AUTH. An IPv4 client seen on an IPv6 socket
(``::ffff:a.b.c.d``) counts as its IPv4 address; an address that does not parse is in no network."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(networks: Iterable[str]) -> list[Network]:
    return [ipaddress.ip_network(n, strict=False) for n in networks]


def in_networks(client_ip: str, networks: Iterable[Network], *, loopback: bool = False) -> bool:
    """True when ``client_ip`` is in one of ``networks`` (or, with ``loopback``, is a loopback address)."""
    try:
        addr = ipaddress.ip_address(client_ip)
    except ValueError:
        return False
    mapped = getattr(addr, "ipv4_mapped", None)
    if mapped is not None:
        addr = mapped
    return (loopback and addr.is_loopback) or any(addr in net for net in networks)


def client_network(ip: str) -> str:
    """The network a client address is grouped by (per-network connection caps, rate limits, greylisting):
    /24 for IPv4, /64 for IPv6; an IPv4 address seen on an IPv6 socket counts as IPv4; an unparsable
    address is its own network."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    mapped = getattr(addr, "ipv4_mapped", None)
    if mapped is not None:
        addr = mapped
    prefix = 24 if addr.version == 4 else 64
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))
