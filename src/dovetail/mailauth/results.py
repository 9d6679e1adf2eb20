"""The verdicts of sender authentication and the ``Authentication-Results`` header that carries them.

The checks (``spf``, ``dkimcheck``, ``dmarc``) return these small frozen dataclasses; the MX writes
them into one ``Authentication-Results`` header (RFC 8601) under our authserv-id, and everything
downstream (the replies engine, webhooks) reads verdicts only from that header. ``authres`` parses
headers (the field's parser); writing is a few lines of string formatting, done here so that the
property values are quoted the one way RFC 8601 allows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

SPF_RESULTS = ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror")
DKIM_RESULTS = ("pass", "fail", "neutral", "none", "policy", "temperror", "permerror")
DMARC_RESULTS = ("pass", "fail", "none", "temperror", "permerror")


@dataclass(frozen=True, slots=True)
class SpfResult:
    """RFC 7208 result for one identity: ``scope`` is ``mfrom`` (MAIL FROM) or ``helo``."""

    result: str
    domain: str
    scope: str = "mfrom"
    identity: str = ""  # the MAIL FROM address, or the HELO name
    reason: str = ""
    explanation: str = ""  # exp= text of a fail


@dataclass(frozen=True, slots=True)
class DkimResult:
    """One DKIM-Signature's verdict (RFC 6376). ``body_length_limited``: the signature had ``l=``,
    so content may have been appended after signing (a risk to report, not a failure)."""

    domain: str
    selector: str
    result: str
    algorithm: str = ""
    reason: str = ""
    body_length_limited: bool = False
    key_bits: int | None = None
    signature_b: str = ""  # the first characters of b=, to tell signatures of one domain apart


@dataclass(frozen=True, slots=True)
class DmarcResult:
    """RFC 7489 result for the RFC5322.From domain and what its policy asks for.

    ``policy`` is the policy that applies to this From domain (``p`` or ``sp``), ``disposition``
    what the policy asks after ``pct`` sampling: ``none``, ``quarantine`` or ``reject``.
    """

    result: str
    from_domain: str
    policy: str = "none"
    disposition: str = "none"
    org_domain: str = ""
    reason: str = ""
    spf_aligned: bool = False
    dkim_aligned: bool = False


@dataclass(frozen=True, slots=True)
class Verdicts:
    """Everything sender authentication found about one message."""

    spf: SpfResult
    helo: SpfResult | None
    dkim: tuple[DkimResult, ...]
    dmarc: DmarcResult
    arc: str = "none"
    notes: tuple[str, ...] = field(default_factory=tuple)

    def log_text(self) -> str:
        """``spf=pass dkim=pass (d=example.com) dmarc=pass``, for the queue id's log line."""
        if self.dkim:
            dkim = " ".join(f"dkim={d.result} (d={d.domain or '-'})" for d in self.dkim)
        else:
            dkim = "dkim=none"
        dmarc = f"dmarc={self.dmarc.result}"
        if self.dmarc.from_domain:
            dmarc += f" (p={self.dmarc.policy} dis={self.dmarc.disposition} from={self.dmarc.from_domain})"
        return f"spf={self.spf.result} {dkim} {dmarc}"


_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+\-/^_`{|}~.@]+")


def _value(text: str) -> str:
    """A property value: a token as is, else a quoted-string."""
    if _TOKEN.fullmatch(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _comment(text: str) -> str:
    clean = re.sub(r"[()\\\r\n]", " ", text)
    return f" ({clean})" if clean else ""


def authentication_results(authserv_id: str, verdicts: Verdicts) -> bytes:
    """The ``Authentication-Results:`` header line (folded, CRLF-terminated) for ``verdicts``."""
    parts: list[str] = []
    spf = verdicts.spf
    if spf.scope == "helo":
        parts.append(f"spf={spf.result}{_comment(spf.reason)} smtp.helo={_value(spf.identity or spf.domain)}")
    else:
        parts.append(f"spf={spf.result}{_comment(spf.reason)} smtp.mailfrom={_value(spf.identity or spf.domain)}")
    for d in verdicts.dkim:
        props = f" header.d={_value(d.domain)}" if d.domain else ""
        if d.selector:
            props += f" header.s={_value(d.selector)}"
        if d.algorithm:
            props += f" header.a={_value(d.algorithm)}"
        if d.signature_b:
            props += f" header.b={_value(d.signature_b)}"
        notes = d.reason
        if d.body_length_limited:
            notes = (notes + "; " if notes else "") + "body length limited (l=)"
        if d.key_bits:
            notes = (notes + "; " if notes else "") + f"{d.key_bits}-bit key"
        parts.append(f"dkim={d.result}{_comment(notes)}{props}")
    if not verdicts.dkim:
        parts.append("dkim=none" + _comment("; ".join(verdicts.notes)))
    dm = verdicts.dmarc
    comment = f"p={dm.policy} dis={dm.disposition}" if dm.from_domain else ""
    if dm.reason:
        comment = (comment + "; " if comment else "") + dm.reason
    dmarc = f"dmarc={dm.result}{_comment(comment)}"
    if dm.from_domain:
        dmarc += f" header.from={_value(dm.from_domain)} policy.dmarc={dm.policy}"
    parts.append(dmarc)
    if verdicts.arc != "none":
        parts.append(f"arc={verdicts.arc}")
    return ("Authentication-Results: " + authserv_id + ";\r\n\t" + ";\r\n\t".join(parts) + "\r\n").encode()


def parse_ours(header_values: list[str], authserv_id: str) -> dict:
    """The ``auth`` object of webhooks: the verdicts of the A-R header(s) written by ``authserv_id``.

    Returns ``{spf, dkim: [{domain, selector, result}], dmarc: {result, policy, from_domain}, arc, spam}``;
    values are None when our header is absent (mail that did not come through our MX). ``spam`` is
    True/False from the ``spam=yes|no`` entry the MX's content filter adds.
    """
    import authres

    out: dict = {"spf": None, "dkim": [], "dmarc": None, "arc": None, "spam": None}
    for value in header_values:
        try:
            parsed = authres.AuthenticationResultsHeader.parse_value(" ".join(value.split()))
        except Exception:
            continue
        if str(parsed.authserv_id).lower() != authserv_id.lower():
            continue
        for res in parsed.results:
            method = str(res.method).lower()
            props = {f"{p.type}.{p.name}".lower(): str(p.value) for p in res.properties}
            if method == "spf" and out["spf"] is None:
                out["spf"] = str(res.result)
            elif method == "dkim" and props.get("header.d"):
                out["dkim"].append({"domain": props.get("header.d"), "selector": props.get("header.s"),
                                    "result": str(res.result)})
            elif method == "dmarc":
                out["dmarc"] = {"result": str(res.result), "policy": props.get("policy.dmarc"),
                                "from_domain": props.get("header.from")}
            elif method == "arc":
                out["arc"] = str(res.result)
            elif method == "spam" and out["spam"] is None:
                out["spam"] = str(res.result).lower() == "yes"
        break  # the topmost header of ours is the one our MX wrote
    return out
