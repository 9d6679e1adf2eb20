"""DKIM verification (RFC 6376) of every signature of a message, as the MX asks for it.

``verify_dkim`` is the one entry point the MX uses. The work is :mod:`.dkimverify`'s (our verifier on
``cryptography``, several times dkimpy's speed, with async key lookups); this module adapts the
process's cached resolver to that verifier's DNS contract (:mod:`.dnserrors`) and its results to
the :class:`~.results.DkimResult` the A-R writer and DMARC take.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from . import dkimverify, dnserrors
from .dns import DnsTempError, Lookup
from .results import DkimResult

TxtLookup = Callable[[str], Awaitable[Lookup]]


async def verify_dkim(message: bytes, txt: TxtLookup) -> list[DkimResult]:
    """One result per DKIM-Signature header (none: an empty list). Never raises for bad input."""

    async def records(name: str) -> list[str]:
        try:
            return list((await txt(name)).records)
        except DnsTempError as exc:
            raise dnserrors.DnsTempError(str(exc)) from exc

    return [DkimResult(r.domain, r.selector, r.result, r.algorithm, r.reason, r.body_length_limited, r.key_bits,
                       r.header_b)
            for r in await dkimverify.verify_dkim(message, records)]
