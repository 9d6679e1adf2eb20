"""DNSBL/DNSWL lookups for one client: every configured domain asked at once through the process's
resolver (``dns.nameservers``; dnspython's cache keeps answers for their TTL). A list that does not
answer in time counts as not listing the client, as postscreen treats it: a slow list must not hold
mail up nor block it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from ...log import get_logger
from ...mailauth.dns import DnsTempError, Resolver
from .sites import Score, Site, query_name, score

log = get_logger("screen")


async def _ask(resolver: Resolver, client_ip: str, domain: str) -> tuple[str, tuple[str, ...]]:
    try:
        found = await resolver.addresses(query_name(client_ip, domain))
    except DnsTempError as exc:
        log.info(f"warning: dnsbl {domain}: lookup error for [{client_ip}]: {exc}")
        return domain, ()
    return domain, found.records


async def lookup(resolver: Resolver, sites: Sequence[Site], client_ip: str) -> Score:
    """The client's weighted score over ``sites`` (each domain asked once, all at the same time)."""
    domains = sorted({s.domain for s in sites})
    if not domains:
        return Score()
    answers = dict(await asyncio.gather(*(_ask(resolver, client_ip, d) for d in domains)))
    result = score(sites, answers)
    for item in dict.fromkeys(result.ignored):
        log.warning(f"dnsbl {item} for [{client_ip}] is an error code of the list (rate limited or refused), "
                    "not a listing: ignored")
    return result
