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
ARC_RESULTS = ("pass", "fail", "none")


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
    override: str = ""  # "arc": a trusted ARC sealer saw DMARC pass, so the policy was not enforced
    override_reason: str = ""


@dataclass(frozen=True)
class ArcResult:
    """The ARC chain verdict (RFC 8617 §5.2) for Authentication-Results (``arc=``) and for sealing (``cv=``).

    ``oldest_pass`` is the oldest instance whose ARC-Message-Signature still verifies with every newer
    one (0 when all do); ``sealers`` the ``d=`` of each ARC-Seal and ``results`` the resinfo of each
    ARC-Authentication-Results (instance 1 first), filled for a passing chain.
    """

    result: str  # none | pass | fail
    instances: int = 0
    reason: str = ""
    oldest_pass: int | None = None
    sealers: tuple[str, ...] = ()
    temporary: bool = False  # a failure caused by a key lookup that may succeed later
    results: tuple[str, ...] = ()
    checked: bool = True  # False: not verified at all (too large to hold); A-R then says nothing of ARC

    def authres(self, remote_ip: str = "") -> str:
        """The ``arc=`` result as RFC 8601/8617 §10 print it in an Authentication-Results header."""
        text = f"arc={self.result}"
        if self.result == "pass" and self.instances:
            text += _comment(f"i={self.instances} sealed by {', '.join(s or '-' for s in self.sealers)}")
        elif self.reason:
            text += _comment(self.reason)
        if self.result == "pass" and self.oldest_pass is not None:
            text += f" header.oldest-pass={self.oldest_pass}"
        if remote_ip and self.result != "none":
            text += f" smtp.remote-ip={_value(remote_ip)}"
        return text


@dataclass(frozen=True, slots=True)
class Verdicts:
    """Everything sender authentication found about one message."""

    spf: SpfResult
    helo: SpfResult | None
    dkim: tuple[DkimResult, ...]
    dmarc: DmarcResult
    arc: ArcResult = ArcResult("none")
    notes: tuple[str, ...] = field(default_factory=tuple)
    client_ip: str = ""

    def log_text(self) -> str:
        """``spf=pass dkim=pass (d=example.com) dmarc=pass arc=none``, for the queue id's log line."""
        if self.dkim:
            dkim = " ".join(f"dkim={d.result} (d={d.domain or '-'})" for d in self.dkim)
        else:
            dkim = "dkim=none"
        dmarc = f"dmarc={self.dmarc.result}"
        if self.dmarc.from_domain:
            why = f"; {self.dmarc.reason}" if self.dmarc.result in ("temperror", "permerror") else ""
            dmarc += f" (p={self.dmarc.policy} dis={self.dmarc.disposition} from={self.dmarc.from_domain}{why})"
        elif self.dmarc.reason:
            dmarc += f" ({self.dmarc.reason})"
        arc = f"arc={self.arc.result}"
        if self.arc.result == "pass":
            arc += f" (i={self.arc.instances} sealed by {','.join(s or '-' for s in self.arc.sealers)})"
        elif self.arc.reason:
            arc += f" ({self.arc.reason})"
        if self.dmarc.override:
            arc += f" policy.override={self.dmarc.override} ({self.dmarc.override_reason})"
        return f"spf={self.spf.result} {dkim} {dmarc} {arc}"


_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+\-/^_`{|}~.@]+")


def _value(text: str) -> str:
    """A property value: a token as is, else a quoted-string."""
    if _TOKEN.fullmatch(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _comment(text: str) -> str:
    """`` (text)``: parentheses inside become brackets and line breaks spaces, so the comment stays one."""
    clean = re.sub(r"[\\\r\n]", " ", text).replace("(", "[").replace(")", "]")
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
    if dm.override:
        comment = (comment + "; " if comment else "") + f"policy overridden: {dm.override_reason}"
    dmarc = f"dmarc={dm.result}{_comment(comment)}"
    if dm.from_domain:
        dmarc += f" header.from={_value(dm.from_domain)} policy.dmarc={dm.policy}"
    if dm.override:
        dmarc += f" policy.override={_value(dm.override)}"
    parts.append(dmarc)
    if verdicts.arc.checked:  # unchecked: no arc= at all, so a forwarder verifies the chain itself
        parts.append(verdicts.arc.authres(verdicts.client_ip))
    return ("Authentication-Results: " + authserv_id + ";\r\n\t" + ";\r\n\t".join(parts) + "\r\n").encode()


def parse_ours(header_values: list[str], authserv_id: str) -> dict:
    """The ``auth`` object of webhooks: the verdicts of the A-R header(s) written by ``authserv_id``.

    Returns ``{spf, dkim: [{domain, selector, result}], dmarc: {result, policy, from_domain, override}, arc,
    spam}`` (``override``: ``arc`` when a trusted ARC sealer's verdict kept the policy from being applied,
    else None; ``spam`` True/False from the ``spam=yes|no`` entry the MX's content filter adds); values are
    None when our header is absent (mail that did not come through our MX).
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
                                "from_domain": props.get("header.from"), "override": props.get("policy.override")}
            elif method == "arc":
                out["arc"] = str(res.result)
            elif method == "spam" and out["spam"] is None:
                out["spam"] = str(res.result).lower() == "yes"
        break  # the topmost header of ours is the one our MX wrote
    return out
