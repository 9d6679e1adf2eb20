"""Each recipient's spam thresholds: the tenant owning its mailbox, as ``dovetail tenant set --spam-*`` left them.

Looked up once per tenant and kept for a few seconds, so a burst of mail costs one query per tenant;
a change reaches the MX within that time, as directory changes do.
"""

from __future__ import annotations

import asyncio
import time

from ..directory import Resolver
from .contentfilter import ThresholdLookup, Thresholds

TTL = 2.0


def tenant_thresholds(resolver: Resolver, ttl: float = TTL) -> ThresholdLookup:
    cache: dict[str, tuple[float, Thresholds | None]] = {}

    def lookup_sync(address: str) -> Thresholds | None:
        res = resolver.cached(address) or resolver.resolve(address)
        tenant = next((m.tenant for m in res.mailboxes), None)
        if tenant is None:
            return None
        hit = cache.get(tenant)
        now = time.monotonic()
        if hit is not None and now - hit[0] < ttl:
            return hit[1]
        policy = resolver.directory.tenant_spam_policy(tenant)
        found = None if policy is None else Thresholds(policy["reject"], policy["greylist"],
                                                       policy["rewrite_subject"], policy["add_header"])
        cache[tenant] = (now, found)
        return found

    async def lookup(address: str) -> Thresholds | None:
        return await asyncio.to_thread(lookup_sync, address)

    return lookup
