"""What mail an alias forwards to another domain gets before it leaves: an SRS sender and an ARC seal.

A forwarded message keeps its author's From and DKIM signatures, but it leaves from our servers: the
destination's SPF check of the envelope sender would fail, and DMARC with it. So the envelope sender is
rewritten with SRS to an address of the alias's domain (``directory.srs``; bounces to it come back
through the resolver), and an ARC set (``mailauth.arc``) records what we verified at intake, signed with
the alias domain's DKIM key, so the destination can trust our verdicts when the original DKIM broke.

The ARC-Authentication-Results carry our own Authentication-Results (the one whose authserv-id is our
hostname; the intake renames any other claiming it), and its ``arc=`` result is the chain's ``cv=``.
When the message has no such header, the chain it came with is verified here (``txt`` lookups).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

from dovetail.directory.srs import Srs
from dovetail.log import get_logger
from dovetail.mailauth.arc import ArcResult, seal, verify_arc
from dovetail.mailauth.dkimcanon import DkimFormatError, split_message
from dovetail.mailauth.dnserrors import TxtLookup
from dovetail.outbound.keys import DkimKeys

log = get_logger("smtp")

_ARC_RESULT = re.compile(r"(?:^|;)\s*arc\s*=\s*(pass|fail|none)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Forwarded:
    """A forwarded message as it leaves: envelope sender and bytes."""

    sender: str
    data: bytes
    sealed_by: str | None = None  # the d= of our ARC seal, when sealed


def alias_domain(original: str) -> str:
    """The domain of the alias a recipient came from (``QueueRecipient.original``)."""
    return original.rpartition("@")[2].lower()


def our_results(data: bytes, authserv_id: str) -> str | None:
    """The resinfo of our Authentication-Results header (``dkim=pass ...; spf=...``), or None."""
    try:
        fields, _ = split_message(data)
    except DkimFormatError:
        return None
    for name, raw in fields:
        if name != b"authentication-results":
            continue
        value = " ".join(raw.partition(b":")[2].decode("utf-8", "replace").split())
        head, _, rest = value.partition(";")
        words = head.split()
        if words and words[0].lower() == authserv_id.lower():
            return rest.strip()
    return None


class Forwarder:
    """SRS and ARC for forwarded recipients; both can be turned off (``forwarding.*`` config keys)."""

    def __init__(self, *, srs: Srs | None, keys: DkimKeys | None, authserv_id: str, txt: TxtLookup | None = None,
                 arc_seal: bool = True) -> None:
        self.srs = srs
        self.keys = keys
        self.authserv_id = authserv_id
        self.txt = txt
        self.arc_seal = arc_seal

    def sender(self, sender: str, domain: str) -> str:
        return self.srs.forward(sender, domain) if self.srs is not None else sender

    async def prepare(self, qid: str, sender: str, data: bytes, domain: str) -> Forwarded:
        """The SRS sender and the sealed message for recipients forwarded by an alias of ``domain``.

        ``DkimKeyUnavailable`` (from the key store) when the domain's key cannot be loaded: like
        signing, the seal is never silently left out."""
        new_sender = self.sender(sender, domain)
        if not self.arc_seal or self.keys is None:
            return Forwarded(new_sender, data)
        keys = await asyncio.to_thread(self.keys.signing_keys, domain)
        key = next((k for k in keys if k.algorithm == "rsa-sha256"), None)  # what ARC receivers understand
        if key is None:
            return Forwarded(new_sender, data)
        results = our_results(data, self.authserv_id)
        stamped = _ARC_RESULT.search(results or "")
        if stamped:
            chain = ArcResult(stamped.group(1).lower())
        elif self.txt is not None:
            chain = await verify_arc(data, self.txt)
        else:
            chain = ArcResult("none")
        if results is None:
            results = chain.authres() if chain.result != "none" else ""
        arc_set = await asyncio.to_thread(seal, data, key, authserv_id=self.authserv_id, results=results,
                                          chain=chain)
        if not arc_set:
            log.info(f"not ARC-sealed: the chain is at its limit or the message unparsable (cv={chain.result})",
                     qid=qid)
            return Forwarded(new_sender, data)
        return Forwarded(new_sender, arc_set + data, key.domain)
