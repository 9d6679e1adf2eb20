"""The contract between the DNS resolver and the checks that ask it for TXT records (DKIM keys, ARC).

A check is handed ``txt: TxtLookup``, an async callable ``await txt(name) -> list[str]``:

- each item is one TXT record, its character-strings already joined (RFC 7208 §3.3, RFC 6376 §3.6.2.2);
- ``[]`` means the name has no TXT record (NXDOMAIN or NODATA): an answer, not an error;
- ``DnsTempError`` for trouble that may pass (timeout, SERVFAIL, no server reachable): the check reports
  ``temperror``;
- ``DnsPermError`` for an answer that can never be used (a name that is no DNS name, a reply over the
  size limit, a CNAME loop): the check reports ``permerror``.

A resolver may return a list that also carries ``ttl`` (seconds, an attribute of the returned object):
the DKIM key cache then keeps the parsed key that long without asking again.

``dnspython_txt`` adapts a dnspython asyncio resolver to the contract (the tests and the forwarding
path use it; the intake's shared resolver implements the same contract with its own cache).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

TxtLookup = Callable[[str], Awaitable[list[str]]]


class DnsTempError(Exception):
    """A DNS lookup that failed for now (timeout, SERVFAIL): worth trying again later."""


class DnsPermError(Exception):
    """A DNS lookup whose answer can never be used (bad name, oversized or looping answer)."""


class TxtRecords(list[str]):
    """TXT records with the TTL of the answer they came from."""

    def __init__(self, records: list[str], ttl: float) -> None:
        super().__init__(records)
        self.ttl = ttl


def dnspython_txt(resolver: Any) -> TxtLookup:
    """``TxtLookup`` over a ``dns.asyncresolver.Resolver``."""
    import dns.exception
    import dns.name
    import dns.resolver

    async def txt(name: str) -> list[str]:
        try:
            answer = await resolver.resolve(name.rstrip("."), "TXT")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except (dns.name.LabelTooLong, dns.name.NameTooLong, dns.name.EmptyLabel) as exc:
            raise DnsPermError(f"{name}: {exc}") from None
        except (dns.resolver.NoNameservers, dns.exception.Timeout, dns.resolver.LifetimeTimeout) as exc:
            raise DnsTempError(f"{name}: {exc.__class__.__name__}") from None
        except dns.exception.DNSException as exc:
            raise DnsTempError(f"{name}: {exc}") from None
        records = [b"".join(r.strings).decode("utf-8", "replace") for r in answer]
        return TxtRecords(records, float(answer.rrset.ttl if answer.rrset is not None else 0))

    return txt
