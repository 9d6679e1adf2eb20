"""Sender authentication of one message: SPF, DKIM and DMARC together, as the MX asks for it.

SPF (MAIL FROM and HELO) and DKIM run concurrently over the process's cached resolver; DMARC then
judges the From domain with their results. ``check_dkim=False`` leaves DKIM out (a message too
large to hold for verification): DMARC then decides on SPF alone, and the A-R header says why.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

from . import dkimcheck, dmarc, spf
from .dns import Resolver
from .headers import split_message
from .results import DkimResult, SpfResult, Verdicts


async def authenticate(message: bytes, *, client_ip: str, helo: str | None, sender: str, resolver: Resolver,
                       check_dkim: bool = True, sample: Callable[[], float] = random.random) -> Verdicts:
    """The verdicts for ``message`` received from ``client_ip`` with this HELO and MAIL FROM."""
    helo_name = (helo or "").strip().rstrip(".").lower()
    sender_domain = sender.rpartition("@")[2].lower() if sender else ""

    async def mfrom() -> SpfResult | None:
        if not sender:
            return None
        return await spf.check_host(client_ip, sender_domain, sender, helo_name, resolver)

    async def helo_check() -> SpfResult:
        return await spf.check_host(client_ip, helo_name, "", helo_name, resolver, scope="helo")

    async def dkim_check() -> list[DkimResult]:
        if not check_dkim:
            return []
        return await dkimcheck.verify_dkim(message, resolver.txt)

    mfrom_result, helo_result, dkim_results = await asyncio.gather(mfrom(), helo_check(), dkim_check())
    spf_result = mfrom_result if mfrom_result is not None else helo_result
    header_block, _ = split_message(message)
    dmarc_result = await dmarc.evaluate(header_block, spf_result, dkim_results, resolver, sample)
    notes = () if check_dkim else ("message too large: DKIM not verified",)
    return Verdicts(spf_result, helo_result, tuple(dkim_results), dmarc_result, notes=notes)
