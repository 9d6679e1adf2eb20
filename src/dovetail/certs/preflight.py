"""Before ordering: does the name reach us? A CA that cannot validate a name counts a failed order
against the account's rate limits, so a name whose DNS points elsewhere is refused here, with the reason.

With ``acme.public_addresses`` set, the name's A/AAAA records must be among them. Without, an HTTP-01
order gets a self-check instead: a probe token is put where the web listener serves challenges and
fetched from each address the name resolves to, on the port the CA will use. DNS-01 needs neither
(wildcards, firewalled hosts): the hook proves control of the zone.
"""

from __future__ import annotations

import ipaddress
import secrets

import dns.exception
import dns.resolver
import httpx

from ..mailauth.dns import sync_resolver
from .challenges import ChallengeFiles


class NotOurs(RuntimeError):
    """The name does not point at this server: ordering it would fail."""


def resolve(name: str, nameservers: list[str], timeout: float) -> list[str]:
    resolver = sync_resolver(nameservers, timeout)
    found: list[str] = []
    for rdtype in ("A", "AAAA"):
        try:
            found += [str(r) for r in resolver.resolve(name, rdtype)]
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            continue
        except dns.exception.DNSException as exc:
            raise NotOurs(f"{name}: DNS lookup failed ({exc.__class__.__name__}); try again later") from None
    return found


def check(name: str, challenge: str, *, nameservers: list[str], timeout: float, public: list[str],
          files: ChallengeFiles, http_port: int) -> None:
    """Raise NotOurs with the reason when ``name`` cannot be validated by ``challenge`` here."""
    if challenge == "dns-01":
        return
    found = resolve(name, nameservers, timeout)
    if not found:
        raise NotOurs(f"{name} has no A or AAAA record: point it at this server first")
    if public:
        ours = {ipaddress.ip_address(a) for a in public}
        theirs = sorted(a for a in found if ipaddress.ip_address(a) not in ours)
        if theirs:
            raise NotOurs(f"{name} resolves to {', '.join(theirs)}, not to this server "
                          f"(acme.public_addresses: {', '.join(public)})")
        return
    if challenge == "http-01":
        _self_check(name, found, files, http_port, timeout)


def _self_check(name: str, addresses: list[str], files: ChallengeFiles, port: int, timeout: float) -> None:
    token = "dovetail-selfcheck-" + secrets.token_urlsafe(16)
    value = secrets.token_urlsafe(24)
    path = files.http01_put(token, value)
    try:
        for address in addresses:
            host = f"[{address}]" if ":" in address else address
            url = f"http://{host}:{port}/.well-known/acme-challenge/{token}"
            try:
                got = httpx.get(url, headers={"Host": name}, timeout=timeout)
            except httpx.HTTPError as exc:
                raise NotOurs(f"{name} resolves to {address}, but http://{name}:{port}/ does not answer there "
                              f"({exc.__class__.__name__}): it does not reach this server") from None
            if got.status_code != 200 or got.text.strip() != value:
                raise NotOurs(f"{name} resolves to {address}, but the HTTP-01 self-check on port {port} got "
                              f"another answer (HTTP {got.status_code}): that address is not this server")
    finally:
        files.remove(path)
