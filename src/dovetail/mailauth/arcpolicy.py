"""Local policy over a DMARC fail: believe the DMARC verdict of an ARC sealer the operator trusts.

A mailing list or forwarder that changes a message (a subject tag, a footer) breaks its DKIM
signature, and its envelope sender fails SPF, so the author's DMARC fails here although it passed at
the list. RFC 8617 §7.2 lets a receiver use the ARC chain to decide otherwise; the large receivers
do it for sealers they know (Microsoft's "trusted ARC sealers", Gmail's own list). We do the same
for the domains in ``mx.arc_trusted_sealers``, and only when all of this holds:

- DMARC failed and the chain verdict is ``pass`` (every seal and the newest AMS verify);
- the newest ARC set sealed (``d=``) by a trusted domain reports ``dmarc=pass`` for the same From
  domain (``header.from``) in its ARC-Authentication-Results (older trusted sets are not asked);
- that set's ARC-Message-Signature still verifies (``oldest_pass`` is 0 or not newer than it), so
  nothing a later, untrusted hop changed in the signed headers or body is covered by the verdict.

The DMARC result stays ``fail`` (it is what the message shows); only the disposition becomes
``none``, and the override is recorded (``policy.override=arc`` in our Authentication-Results, the
``trusted_forwarder`` override of RFC 7489 reports).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from .results import ArcResult, DmarcResult


def _dmarc_pass_for(resinfo: str, from_domain: str) -> bool:
    """Whether an ARC-Authentication-Results value (``authserv-id; ...``) says dmarc=pass for ``from_domain``."""
    import authres

    try:
        parsed = authres.AuthenticationResultsHeader.parse_value(" ".join(resinfo.split()))
    except Exception:  # noqa: BLE001 - whatever a sealer wrote, unparsable means not believed
        return False
    for res in parsed.results:
        if str(res.method).lower() != "dmarc" or str(res.result).lower() != "pass":
            continue
        props = {f"{p.type}.{p.name}".lower(): str(p.value).lower().rstrip(".") for p in res.properties}
        if props.get("header.from") == from_domain.lower().rstrip("."):
            return True
    return False


def trusted_override(dmarc: DmarcResult, arc: ArcResult, trusted: Iterable[str]) -> DmarcResult:
    """``dmarc`` with its disposition lifted to ``none`` when a trusted sealer vouches for it (see above)."""
    sealers = {t.lower().rstrip(".") for t in trusted}
    if not sealers or dmarc.result != "fail" or arc.result != "pass" or not dmarc.from_domain:
        return dmarc
    for i in range(len(arc.sealers), 0, -1):
        sealer = arc.sealers[i - 1].lower().rstrip(".")
        if sealer not in sealers:
            continue
        if arc.oldest_pass and i < arc.oldest_pass:
            return dmarc  # changed after this sealer signed: its verdict is about another message
        if i <= len(arc.results) and _dmarc_pass_for(arc.results[i - 1], dmarc.from_domain):
            return dataclasses.replace(dmarc, disposition="none", override="arc",
                                       override_reason=f"trusted ARC sealer {sealer} (i={i}) saw dmarc=pass")
        return dmarc  # the newest trusted set decides; an older one is not asked instead
    return dmarc
