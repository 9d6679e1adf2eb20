"""Where mail for a domain goes: MX lookup with the implicit-MX fallback, null MX, and MTA-STS.

RFC 5321 §5.1: MX records in preference order; no MX but an address record means the domain
itself; a null MX (``0 .``, RFC 7505) means the domain accepts no mail. MTA-STS (RFC 8461): when
``_mta-sts.<domain>`` is published, the policy file says which MX names are valid and whether TLS
with a verified certificate is mandatory (``enforce``); policies are cached for their max_age. With
DANE on, the resolver is a validating one and each MX host records whether its DNS answers were
secure (:mod:`dovetail.outbound.dane`).
"""

from __future__ import annotations

import asyncio
import fnmatch
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import dns.asyncresolver
import dns.exception
import dns.resolver
import httpx

from dovetail.mailauth.dns import get_resolver as process_resolver
from dovetail.outbound.dane import TlsaAnswer, authenticated, lookup_tlsa

MAX_POLICY_SIZE = 64 * 1024
MAX_MX_HOSTS = 10


class LookupFailed(Exception):
    """DNS trouble: ``permanent`` for a domain that cannot receive mail, else retry later."""

    def __init__(self, dsn: str, reason: str, permanent: bool) -> None:
        super().__init__(reason)
        self.dsn, self.reason, self.permanent = dsn, reason, permanent


@dataclass(frozen=True)
class MxHost:
    name: str
    preference: int
    addresses: tuple[str, ...]
    # DNSSEC: the MX RRset (or, for an implicit MX, its denial) and this host's address records came with
    # the AD bit of a validating resolver (RFC 7672 §2.2); only then may its TLSA records be used.
    secure: bool = False


@dataclass(frozen=True)
class StsPolicy:
    mode: str  # enforce | testing | none
    mx: tuple[str, ...]
    max_age: int
    fetched: float = field(default_factory=time.monotonic)

    def allows(self, host: str) -> bool:
        """RFC 8461 §4.1: ``*.example.com`` matches exactly one extra leftmost label."""
        host = host.rstrip(".").lower()
        for pattern in self.mx:
            if pattern.startswith("*."):
                head, _, rest = host.partition(".")
                if head and rest == pattern[2:]:
                    return True
            elif host == pattern:
                return True
        return False


def parse_policy(text: str) -> StsPolicy:
    """Parse a policy file; raises ValueError when it is not a valid STSv1 policy."""
    values: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, colon, value = line.partition(":")
        if colon:
            values.setdefault(key.strip().lower(), []).append(value.strip())
    if values.get("version") != ["STSv1"]:
        raise ValueError("not an STSv1 policy")
    mode = (values.get("mode") or [""])[0]
    if mode not in ("enforce", "testing", "none"):
        raise ValueError(f"bad mode {mode!r}")
    try:
        max_age = int((values.get("max_age") or [""])[0])
    except ValueError:
        raise ValueError("bad max_age") from None
    mx = tuple(m.lower().rstrip(".") for m in values.get("mx", []) if fnmatch.fnmatch(m, "*?.?*"))
    if mode != "none" and not mx:
        raise ValueError("policy lists no mx")
    return StsPolicy(mode, mx, min(max(max_age, 0), 31557600))


PolicyFetcher = Callable[[str], Awaitable[str]]


async def https_fetch_policy(domain: str) -> str:
    """GET ``https://mta-sts.<domain>/.well-known/mta-sts.txt`` with certificate checks, size-limited."""
    url = f"https://mta-sts.{domain}/.well-known/mta-sts.txt"
    async with httpx.AsyncClient(timeout=10, follow_redirects=False) as client, client.stream("GET", url) as resp:
        if resp.status_code != 200:
            raise ValueError(f"policy fetch answered {resp.status_code}")
        body = b""
        async for chunk in resp.aiter_bytes():
            body += chunk
            if len(body) > MAX_POLICY_SIZE:
                raise ValueError("policy file too large")
        return body.decode("utf-8", "replace")


class MxResolver:
    """MX and MTA-STS lookups with one dnspython async resolver (the process's, ``dns.nameservers``,
    when None)."""

    def __init__(self, resolver: dns.asyncresolver.Resolver | None = None,
                 fetch_policy: PolicyFetcher | None = https_fetch_policy) -> None:
        self.resolver = resolver or process_resolver().dnspython
        self.fetch_policy = fetch_policy
        self._policies: dict[str, StsPolicy | None] = {}

    async def addresses(self, host: str) -> tuple[str, ...]:
        return (await self.secure_addresses(host))[0]

    async def secure_addresses(self, host: str) -> tuple[tuple[str, ...], bool]:
        """The host's addresses, and whether every answer that had some was authenticated (AD)."""
        out: list[str] = []
        secure = True
        for rtype in ("A", "AAAA"):
            try:
                answer = await self.resolver.resolve(host, rtype, raise_on_no_answer=False)
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.NoNameservers):
                continue
            if answer.rrset is None:
                continue
            secure = secure and authenticated(answer)
            out.extend(r.to_text() for r in answer.rrset)
        return tuple(out), secure and bool(out)

    async def mx_hosts(self, domain: str) -> list[MxHost]:
        """MX hosts best first (equal preferences shuffled), each with its addresses."""
        try:
            answer = await self.resolver.resolve(domain, "MX", raise_on_no_answer=False)
            records = [(r.preference, r.exchange.to_text().rstrip(".").lower()) for r in answer.rrset or ()]
            mx_secure = authenticated(answer)
        except dns.resolver.NXDOMAIN:
            raise LookupFailed("5.1.2", f"Host or domain name not found. Name service error for "
                                        f"name={domain} type=MX: Host not found", True) from None
        except dns.resolver.NoAnswer:
            records, mx_secure = [], False
        except dns.exception.DNSException as exc:
            raise LookupFailed("4.4.3", f"Host or domain name not found. Name service error for "
                                        f"name={domain} type=MX: {exc.__class__.__name__}", False) from None
        if len(records) == 1 and records[0][1] in ("", "."):
            raise LookupFailed("5.1.10", f"Domain {domain} does not accept mail (nullMX)", True)
        if not records:
            addrs, secure = await self.secure_addresses(domain)
            if not addrs:
                raise LookupFailed("5.1.2", f"Host or domain name not found: {domain} has no MX or address "
                                            "records", True)
            return [MxHost(domain, 0, addrs, mx_secure and secure)]
        random.shuffle(records)
        records.sort(key=lambda r: r[0])
        hosts = []
        for pref, name in records[:MAX_MX_HOSTS]:
            addrs, secure = await self.secure_addresses(name)
            if addrs:
                hosts.append(MxHost(name, pref, addrs, mx_secure and secure))
        if not hosts:
            raise LookupFailed("4.4.3", f"no address records for any MX host of {domain}", False)
        return hosts

    async def tlsa(self, host: str, port: int = 25) -> TlsaAnswer:
        """The host's TLSA records (only a secure answer has any; see :mod:`dovetail.outbound.dane`)."""
        return await lookup_tlsa(self.resolver, host, port)

    async def sts_policy(self, domain: str) -> StsPolicy | None:
        """The domain's MTA-STS policy, or None when it publishes none (or it cannot be fetched)."""
        if self.fetch_policy is None:
            return None
        cached = self._policies.get(domain)
        if cached is not None and time.monotonic() - cached.fetched < cached.max_age:
            return cached
        try:
            answer = await self.resolver.resolve(f"_mta-sts.{domain}", "TXT")
            txts = [b"".join(r.strings).decode("ascii", "replace") for r in answer]
        except dns.exception.DNSException:
            return cached  # RFC 8461 §5: keep using a cached policy when the record disappears
        if not any(t.startswith("v=STSv1") for t in txts):
            return cached
        try:
            policy = parse_policy(await asyncio.wait_for(self.fetch_policy(domain), 20))
        except (ValueError, httpx.HTTPError, OSError, TimeoutError):
            return cached
        self._policies[domain] = policy
        return policy
