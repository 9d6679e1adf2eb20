"""DNSBL/DNSWL sites in postscreen's syntax and the weighted score of their answers (sans-I/O).

``zen.spamhaus.org*3``, ``bl.example=127.0.0.[2..11]*2``, ``list.dnswl.org=127.0.[0..255].[1..3]*-5``:
a DNS domain, an optional filter on the returned address (each octet a number, ``[a..b]`` or
``[a;b;c]``) and an optional weight (default 1; negative for allowlists). A site counts once when
any address it returned passes its filter. Answers in ``127.255.255.0/24`` are the lists' error codes
(Spamhaus: query through a public resolver, rate limited, typo) and never count: a list that
answers them for everyone must not block everyone. Postfix's parser is in C; the syntax is small
enough to hand-write here.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

_SITE = re.compile(r"^(?P<domain>[A-Za-z0-9._-]+?)(?:=(?P<filter>[0-9.\[\];]+))?(?:\*(?P<weight>-?\d+))?$")
ERROR_NET = ipaddress.ip_network("127.255.255.0/24")


def _octet(text: str) -> frozenset[int]:
    if text.startswith("[") and text.endswith("]"):
        inner = text[1:-1]
        if ".." in inner:
            low, _, high = inner.partition("..")
            lo, hi = int(low), int(high)
            if not 0 <= lo <= hi <= 255:
                raise ValueError(f"bad range [{inner}]")
            return frozenset(range(lo, hi + 1))
        values = frozenset(int(v) for v in inner.split(";") if v)
    else:
        values = frozenset({int(text)})
    if not values or any(not 0 <= v <= 255 for v in values):
        raise ValueError(f"bad octet {text!r}")
    return values


@dataclass(frozen=True)
class Site:
    """One configured list: its domain, the addresses that count (None: any) and the weight."""

    domain: str
    octets: tuple[frozenset[int], ...] | None = None
    weight: int = 1
    text: str = field(default="", compare=False)

    def matches(self, address: str) -> bool:
        if self.octets is None:
            return True
        parts = address.split(".")
        if len(parts) != 4:
            return False
        try:
            return all(int(p) in allowed for p, allowed in zip(parts, self.octets, strict=True))
        except ValueError:
            return False


def parse_site(text: str) -> Site:
    """One site in postscreen's syntax; raises ValueError with the reason."""
    raw = text.strip()
    m = _SITE.match(raw)
    if not m or "." not in m.group("domain"):
        raise ValueError(f"{text!r} is not a DNSBL site such as zen.spamhaus.org*3 or bl.example=127.0.0.[2..11]*2")
    octets = None
    if m.group("filter"):
        parts = re.findall(r"\[[^\]]*\]|[^.]+", m.group("filter"))
        if len(parts) != 4:
            raise ValueError(f"{text!r}: the filter needs four octets, e.g. 127.0.0.[2..11]")
        try:
            octets = tuple(_octet(p) for p in parts)
        except ValueError as exc:
            raise ValueError(f"{text!r}: {exc}") from None
    weight = int(m.group("weight")) if m.group("weight") else 1
    return Site(m.group("domain").lower().strip("."), octets, weight, raw)


def parse_sites(items: Iterable[str]) -> list[Site]:
    return [parse_site(str(item)) for item in items]


def query_name(client_ip: str, domain: str) -> str:
    """The name to look up: the address's octets (IPv4) or nibbles (IPv6) reversed, under the list's domain."""
    addr = ipaddress.ip_address(client_ip)
    mapped = getattr(addr, "ipv4_mapped", None)
    if mapped is not None:
        addr = mapped
    reverse = addr.reverse_pointer  # 4.3.2.1.in-addr.arpa / b.a.9.8....ip6.arpa
    return reverse.rsplit(".", 2)[0] + "." + domain


def is_error_code(address: str) -> bool:
    """127.255.255.x: the list refuses to answer (error or rate limit), not a listing."""
    try:
        return ipaddress.ip_address(address) in ERROR_NET
    except ValueError:
        return True


@dataclass
class Score:
    """The sum of the weights of the sites that list the client, and what each said."""

    total: int = 0
    hits: list[str] = field(default_factory=list)  # "zen.spamhaus.org*3 (127.0.0.2)"
    ignored: list[str] = field(default_factory=list)  # "zen.spamhaus.org: 127.255.255.254"

    def detail(self) -> str:
        return ", ".join(self.hits)


def score(sites: Iterable[Site], answers: Mapping[str, Iterable[str]]) -> Score:
    """``answers``: the A records each site's domain returned for the client (absent: not listed)."""
    out = Score()
    for site in sites:
        returned = list(answers.get(site.domain, ()))
        usable = []
        for address in returned:
            if is_error_code(address):
                out.ignored.append(f"{site.domain}: {address}")
            else:
                usable.append(address)
        matched = [a for a in usable if site.matches(a)]
        if matched:
            out.total += site.weight
            out.hits.append(f"{site.domain}*{site.weight} ({matched[0]})")
    return out
