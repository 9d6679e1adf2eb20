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


def txt_records(txt: TxtLookup) -> dnserrors.TxtLookup:
    """The verifier's TXT contract (:mod:`.dnserrors`) over the process's cached resolver."""

    async def records(name: str) -> list[str]:
        try:
            return list((await txt(name)).records)
        except DnsTempError as exc:
            raise dnserrors.DnsTempError(str(exc)) from exc

    return records


def for_dmarc(r: dkimverify.DkimResult) -> DkimResult:
    """The verifier's verdict as the MX reports it. A signature whose ``l=`` leaves body octets unsigned
    verified only a prefix of what the recipient reads: anyone may have appended the rest, so it is
    reported ``policy`` (RFC 8601 §2.7.1: signed, but not acceptable here), never ``pass``, and DMARC
    does not count it. rsa-sha1 is already ``policy`` from the verifier (RFC 8301)."""
    result, reason = r.result, r.reason
    if result == "pass" and r.unsigned_octets > 0:
        result = "policy"
        reason = f"l= leaves {r.unsigned_octets} body octets unsigned: not accepted"
    return DkimResult(r.domain, r.selector, result, r.algorithm, reason, r.body_length_limited, r.key_bits,
                      r.header_b)


async def verify_dkim(message: bytes, txt: TxtLookup) -> list[DkimResult]:
    """One result per DKIM-Signature header (none: an empty list). Never raises for bad input."""
    return [for_dmarc(r) for r in await dkimverify.verify_dkim(message, txt_records(txt))]
