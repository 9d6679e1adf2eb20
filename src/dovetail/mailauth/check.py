"""Sender authentication of one message: SPF, DKIM, ARC and DMARC together, as the MX asks for it.

SPF (MAIL FROM and HELO), DKIM and the ARC chain run concurrently over the process's cached
resolver; DMARC then judges the From domain with their results, and a DMARC fail that an ARC
sealer in ``trusted_sealers`` vouches for is not enforced (:mod:`.arcpolicy`). ``check_dkim=False``
leaves DKIM and ARC out (a message too large to hold for verification): DMARC then decides on SPF
alone, and the A-R header says why.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Callable, Iterable

from . import dkimcheck, dmarc, spf
from .arc import verify_arc
from .arcpolicy import trusted_override
from .dns import Resolver
from .headers import split_message
from .results import ArcResult, DkimResult, SpfResult, Verdicts

NOT_VERIFIED = "message too large: DKIM not verified"
_ARC_FIELD = re.compile(rb"(?:^|\n)arc-(?:seal|message-signature|authentication-results)[ \t]*:", re.IGNORECASE)


async def authenticate(message: bytes, *, client_ip: str, helo: str | None, sender: str, resolver: Resolver,
                       check_dkim: bool = True, sample: Callable[[], float] = random.random,
                       trusted_sealers: Iterable[str] = ()) -> Verdicts:
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

    async def arc_check() -> ArcResult:
        if not check_dkim:
            return ArcResult("none", reason="message too large: ARC not verified", checked=False)
        if not _ARC_FIELD.search(split_message(message)[0]):
            return ArcResult("none")  # most mail: no ARC set, so no second parse of the message
        return await verify_arc(message, dkimcheck.txt_records(resolver.txt))

    mfrom_result, helo_result, dkim_results, arc_result = await asyncio.gather(
        mfrom(), helo_check(), dkim_check(), arc_check())
    spf_result = mfrom_result if mfrom_result is not None else helo_result
    header_block, _ = split_message(message)
    dmarc_result = await dmarc.evaluate(header_block, spf_result, dkim_results, resolver, sample)
    dmarc_result = trusted_override(dmarc_result, arc_result, trusted_sealers)
    notes = () if check_dkim else (NOT_VERIFIED,)
    return Verdicts(spf_result, helo_result, tuple(dkim_results), dmarc_result, arc_result, notes, client_ip)
