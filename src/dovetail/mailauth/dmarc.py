"""DMARC (RFC 7489): the RFC5322.From domain, its policy, and alignment of the SPF and DKIM results.

The organisational domain comes from the Public Suffix List bundled with ``publicsuffixlist`` (no
download at run time; a newer list arrives with the package). The policy record is found by the
DMARCbis tree walk: ``_dmarc.<From domain>``, then each parent name up to the organisational
domain (at most ``MAX_WALK`` queries); a record found at a parent applies its ``sp=`` (or ``p=``).

A message whose From header holds no address, several From headers, or addresses of different
domains cannot be judged for one domain: it is a ``fail`` with disposition ``reject`` (RFC 7489
§6.6.1 leaves rejection open; a From an attacker can stuff with a second address is the classic
way around DMARC, so we take the strict reading). Several addresses of one domain are judged as
that domain.
"""

from __future__ import annotations

import email.utils
import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from publicsuffixlist import PublicSuffixList

from .dns import DnsTempError, Resolver
from .results import DkimResult, DmarcResult, SpfResult

MAX_WALK = 5

_PSL: PublicSuffixList | None = None


def org_domain(domain: str) -> str:
    """The organisational domain (registrable name under a public suffix) of ``domain``."""
    global _PSL
    if _PSL is None:
        _PSL = PublicSuffixList()
    domain = domain.lower().rstrip(".")
    return _PSL.privatesuffix(domain) or domain


def aligned(domain: str, from_domain: str, mode: str) -> bool:
    domain, from_domain = domain.lower().rstrip("."), from_domain.lower().rstrip(".")
    if mode == "s":
        return domain == from_domain
    return org_domain(domain) == org_domain(from_domain)


@dataclass(frozen=True, slots=True)
class FromDomain:
    domain: str | None  # None: the message cannot be judged for one domain
    problem: str = ""


def from_domain(header_block: bytes) -> FromDomain:
    """The RFC5322.From domain of a message's header block (see the module docstring for odd Froms)."""
    froms: list[list[str]] = []
    collecting = False
    for raw in header_block.split(b"\n"):
        line = raw.rstrip(b"\r").decode("utf-8", "replace")
        if line[:1] in (" ", "\t"):
            if collecting:
                froms[-1].append(line)
            continue
        name, sep, value = line.partition(":")
        collecting = bool(sep) and name.strip().lower() == "from"
        if collecting:
            froms.append([value])
    if not froms:
        return FromDomain(None, "no From header")
    if len(froms) > 1:
        return FromDomain(None, f"{len(froms)} From headers")
    lines = froms
    text = " ".join(part.strip() for part in lines[0])
    addresses = [addr for _, addr in email.utils.getaddresses([text]) if addr]
    domains = {addr.rpartition("@")[2].lower().rstrip(".") for addr in addresses if "@" in addr}
    if not addresses or not domains or any("@" not in a for a in addresses):
        return FromDomain(None, "From has no address with a domain")
    if len(domains) > 1:
        return FromDomain(None, "From has addresses of several domains")
    domain = domains.pop()
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            return FromDomain(None, "From domain is not a valid name")
    if not re.fullmatch(r"[a-z0-9_-]+(\.[a-z0-9_-]+)+", domain):
        return FromDomain(None, "From domain is not a valid name")
    return FromDomain(domain)



@dataclass(frozen=True, slots=True)
class Policy:
    p: str
    sp: str
    pct: int
    adkim: str
    aspf: str
    found_at: str


def parse_record(text: str, found_at: str) -> Policy | None:
    """A DMARC record's tags; None when it is not a usable record (RFC 7489 §6.3, §6.6.3)."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep:
            tags.setdefault(key.strip().lower(), value.strip())
    if tags.get("v") != "DMARC1" or not text.strip().startswith("v"):
        return None
    p = tags.get("p", "").lower()
    if p not in ("none", "quarantine", "reject"):
        if "rua" not in tags:
            return None
        p = "none"
    sp = tags.get("sp", "").lower()
    if sp not in ("none", "quarantine", "reject"):
        sp = p
    try:
        pct = max(0, min(100, int(tags.get("pct", "100"))))
    except ValueError:
        pct = 100
    adkim = "s" if tags.get("adkim", "r").lower() == "s" else "r"
    aspf = "s" if tags.get("aspf", "r").lower() == "s" else "r"
    return Policy(p, sp, pct, adkim, aspf, found_at)


async def find_policy(domain: str, resolver: Resolver) -> Policy | None:
    """The DMARC policy record for ``domain`` by the tree walk; raises DnsTempError."""
    org = org_domain(domain)
    labels = domain.split(".")
    names = [".".join(labels[i:]) for i in range(len(labels)) if len(labels) - i >= len(org.split("."))]
    if len(names) > MAX_WALK:
        names = names[:1] + names[-(MAX_WALK - 1):]
    for name in names:
        lookup = await resolver.txt(f"_dmarc.{name}")
        records = [r for r in lookup.records if r.strip().lower().startswith("v=dmarc1")]
        if len(records) == 1:
            policy = parse_record(records[0], name)
            if policy is not None:
                return policy
    return None


async def evaluate(header_block: bytes, spf: SpfResult, dkim: list[DkimResult], resolver: Resolver,
                   sample: Callable[[], float] = random.random) -> DmarcResult:
    """The DMARC result of a message whose SPF (MAIL FROM, or HELO for the null sender) and DKIM
    results are known. ``sample`` returns [0, 1) to apply ``pct``."""
    found = from_domain(header_block)
    if found.domain is None:
        return DmarcResult("fail", "", "reject", "reject", reason=found.problem)
    domain = found.domain
    org = org_domain(domain)
    try:
        policy = await find_policy(domain, resolver)
    except DnsTempError as exc:
        return DmarcResult("temperror", domain, "none", "none", org, f"policy lookup: {exc}")
    if policy is None:
        return DmarcResult("none", domain, "none", "none", org, "no DMARC record")
    spf_ok = spf.result == "pass" and aligned(spf.domain, domain, policy.aspf)
    dkim_ok = any(d.result == "pass" and aligned(d.domain, domain, policy.adkim) for d in dkim)
    applies = policy.p if policy.found_at == domain else policy.sp
    if spf_ok or dkim_ok:
        return DmarcResult("pass", domain, applies, "none", org, "", spf_ok, dkim_ok)
    temp = spf.result == "temperror" or any(d.result == "temperror" for d in dkim)
    if temp and applies != "none":
        return DmarcResult("temperror", domain, applies, "none", org, "SPF or DKIM could not be checked")
    disposition = applies
    if applies != "none" and sample() * 100 >= policy.pct:
        disposition = "quarantine" if applies == "reject" else "none"  # §6.6.4: the next less strict
    return DmarcResult("fail", domain, applies, disposition, org, "neither SPF nor DKIM aligned with a pass")
