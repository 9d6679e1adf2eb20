"""One DNS resolver per process, shared by sender authentication and outbound MX lookups.

dnspython's asyncio resolver does the work and its ``LRUCache`` is the cache: answers are kept for
their TTL, and NXDOMAIN/NODATA answers for the SOA minimum of the authority section (RFC 2308), so
the ten SPF lookups of a busy sender cost DNS round trips once per TTL, not per message. What this
module adds is the mapping the checks need: a name that does not exist or has no records of the
type is a *void* answer (``Lookup.void``), anything else that fails (timeout, SERVFAIL, refused,
malformed reply) raises :class:`DnsTempError`, which the checks report as ``temperror``.

``configure`` sets the process-wide resolver from ``dns.nameservers`` / ``dns.timeout``; an empty
list of nameservers means the system resolver (``/etc/resolv.conf``).
"""

from __future__ import annotations

from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

MAX_CACHE_ENTRIES = 50_000


class DnsTempError(Exception):
    """The lookup failed for a reason that may pass (timeout, SERVFAIL, no server answered)."""


@dataclass(frozen=True, slots=True)
class Lookup:
    """The records of one answer as text (TXT strings joined per record), or a void answer."""

    records: tuple[str, ...]
    nxdomain: bool = False

    @property
    def void(self) -> bool:
        """NXDOMAIN or no records of the type (RFC 7208 §4.6.4 counts these)."""
        return not self.records


def parse_nameserver(text: str) -> tuple[str, int]:
    """``ip``, ``ip:port`` or ``[v6]:port`` to (ip, port)."""
    text = text.strip()
    if text.startswith("["):
        host, _, port = text[1:].partition("]")
        return host, int(port.lstrip(":") or 53)
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, int(port)
    return text, 53


class Resolver:
    """Cached async lookups. Safe to share between the tasks of one event loop."""

    def __init__(self, nameservers: list[str] | None = None, timeout: float = 5.0) -> None:
        if nameservers:
            res = dns.asyncresolver.Resolver(configure=False)
            parsed = [parse_nameserver(n) for n in nameservers]
            res.nameservers = [dns.nameserver.Do53Nameserver(host, port) for host, port in parsed]
        else:
            res = dns.asyncresolver.Resolver()
        res.timeout = res.lifetime = timeout
        res.cache = dns.resolver.LRUCache(MAX_CACHE_ENTRIES)
        self.nameservers = list(nameservers or [])
        self.timeout = timeout
        self.dnspython = res  # for callers that want dnspython's answers (outbound MX, MTA-STS)

    async def lookup(self, name: str, rdtype: str) -> Lookup:
        """The records of ``name``; raises DnsTempError when the answer could not be had."""
        try:
            qname = dns.name.from_text(name.rstrip(".") + ".")
        except (dns.exception.DNSException, UnicodeError, ValueError) as exc:
            raise DnsTempError(f"{name!r}: not a domain name ({exc})") from None
        try:
            answer = await self.dnspython.resolve(qname, rdtype, search=False, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return Lookup((), nxdomain=True)
        except dns.resolver.NoAnswer:
            return Lookup(())
        except dns.resolver.YXDOMAIN:
            return Lookup((), nxdomain=True)
        except dns.exception.Timeout:
            raise DnsTempError(f"{name} {rdtype}: timed out") from None
        except dns.resolver.NoNameservers as exc:
            errors = [e[3] for e in exc.kwargs.get("errors") or [] if len(e) > 3]
            if errors and all(isinstance(e, dns.message.ChainTooLong) for e in errors):
                # what a recursive resolver answers SERVFAIL for: temporary in RFC 7208 §5 terms too
                raise DnsTempError(f"{name} {rdtype}: CNAME chain too long (a loop)") from None
            raise DnsTempError(f"{name} {rdtype}: no server answered (SERVFAIL or refused)") from None
        except dns.exception.DNSException as exc:
            raise DnsTempError(f"{name} {rdtype}: {exc.__class__.__name__}") from None
        if answer.rrset is None:
            return Lookup(())
        return Lookup(tuple(_text(rdata, rdtype) for rdata in answer.rrset))

    async def txt(self, name: str) -> Lookup:
        return await self.lookup(name, "TXT")

    async def addresses(self, name: str, ipv6: bool = False) -> Lookup:
        return await self.lookup(name, "AAAA" if ipv6 else "A")


def _text(rdata: object, rdtype: str) -> str:
    if rdtype == "TXT":
        strings = getattr(rdata, "strings", ())
        return b"".join(strings).decode("utf-8", "replace")
    if rdtype == "MX":
        return f"{rdata.preference} {str(rdata.exchange).rstrip('.')}"  # type: ignore[attr-defined]
    if rdtype in ("PTR", "CNAME", "NS"):
        return str(rdata.target).rstrip(".")  # type: ignore[attr-defined]
    return str(rdata)


def sync_resolver(nameservers: list[str] | None = None, timeout: float = 5.0) -> dns.resolver.Resolver:
    """A blocking dnspython resolver asking the same servers (for the CLI's ``dns check``)."""
    if nameservers:
        res = dns.resolver.Resolver(configure=False)
        res.nameservers = [dns.nameserver.Do53Nameserver(*parse_nameserver(n)) for n in nameservers]
    else:
        res = dns.resolver.Resolver()
    res.timeout = res.lifetime = timeout
    return res


_RESOLVER: Resolver | None = None


def configure(nameservers: list[str] | None = None, timeout: float = 5.0) -> Resolver:
    """Set this process's resolver (called once by each worker from the config)."""
    global _RESOLVER
    _RESOLVER = Resolver(nameservers, timeout)
    return _RESOLVER


def get_resolver() -> Resolver:
    """This process's resolver; the system's with default settings until ``configure`` ran."""
    global _RESOLVER
    if _RESOLVER is None:
        _RESOLVER = Resolver()
    return _RESOLVER
