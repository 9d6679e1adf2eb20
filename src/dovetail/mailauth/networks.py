"""Whether a client address lies in configured networks (``auth.trusted_networks``): the one rule for
IMAP's LOGINDISABLED and submission's plaintext AUTH. An IPv4 client seen on an IPv6 socket
(``::ffff:a.b.c.d``) counts as its IPv4 address; an address that does not parse is in no network.

The MX asks these questions several times per connection (caps, rates, greylisting), so a parsed
address and a client's network are remembered for the most recent clients.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(networks: Iterable[str]) -> list[Network]:
    return [ipaddress.ip_network(n, strict=False) for n in networks]


@functools.lru_cache(maxsize=4096)
def _address(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``ip`` parsed, an IPv4-mapped IPv6 address as its IPv4 address; None when it does not parse."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    mapped = getattr(addr, "ipv4_mapped", None)
    return addr if mapped is None else mapped


def in_networks(client_ip: str, networks: Iterable[Network], *, loopback: bool = False) -> bool:
    """True when ``client_ip`` is in one of ``networks`` (or, with ``loopback``, is a loopback address)."""
    addr = _address(client_ip)
    if addr is None:
        return False
    return (loopback and addr.is_loopback) or any(addr in net for net in networks)


@functools.lru_cache(maxsize=4096)
def client_network(ip: str) -> str:
    """The network a client address is grouped by (per-network connection caps, rate limits, greylisting):
    /24 for IPv4, /64 for IPv6; an IPv4 address seen on an IPv6 socket counts as IPv4; an unparsable
    address is its own network."""
    addr = _address(ip)
    if addr is None:
        return ip
    prefix = 24 if addr.version == 4 else 64
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))
