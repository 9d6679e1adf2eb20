"""SMTP TLS reports (RFC 8460 §4): the JSON a sending system posts about its TLS sessions to our MX.

The stdlib's ``json`` reads them; what a stranger controls is bounded: the size (by the unpacking),
the nesting (a ``RecursionError`` is a malformed report, not a crash), and the number of policies and
failure details. Counts must be non-negative integers; a report with no usable policy is malformed.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from .dmarc import ReportError

MAX_POLICIES = 1_000
MAX_FAILURE_DETAILS = 10_000
POLICY_TYPES = ("sts", "tlsa", "no-policy-found")


@dataclass(frozen=True)
class TlsFailure:
    result_type: str
    sending_mta_ip: str
    receiving_mx_hostname: str
    count: int


@dataclass
class TlsPolicy:
    policy_type: str
    domain: str
    success: int
    failure: int
    failures: list[TlsFailure] = field(default_factory=list)


@dataclass
class TlsReport:
    org_name: str
    report_id: str
    begin: dt.datetime
    end: dt.datetime
    policies: list[TlsPolicy] = field(default_factory=list)


def _str(obj: dict[str, Any], key: str, limit: int = 255) -> str:
    value = obj.get(key, "")
    return value.strip()[:limit] if isinstance(value, str) else ""


def _count(obj: dict[str, Any], key: str) -> int:
    value = obj.get(key, 0)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ReportError(f"{key} is {value!r}, not a count")
    return value


def _when(text: Any, what: str) -> dt.datetime:
    if not isinstance(text, str):
        raise ReportError(f"{what} missing")
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ReportError(f"{what} {text[:40]!r} is not an RFC 3339 date-time") from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
    return moment


def _policy(entry: Any) -> TlsPolicy:
    if not isinstance(entry, dict) or not isinstance(entry.get("policy"), dict):
        raise ReportError("policy entry without a policy object")
    policy, summary = entry["policy"], entry.get("summary")
    if not isinstance(summary, dict):
        raise ReportError("policy entry without a summary")
    ptype = _str(policy, "policy-type", 16).lower()
    if ptype not in POLICY_TYPES:
        raise ReportError(f"policy-type {ptype!r}: expected one of {', '.join(POLICY_TYPES)}")
    domain = _str(policy, "policy-domain", 253).lower().rstrip(".")
    if not domain:
        raise ReportError("policy without a policy-domain")
    details = entry.get("failure-details") or []
    if not isinstance(details, list) or len(details) > MAX_FAILURE_DETAILS:
        raise ReportError("failure-details is not a list of bounded length")
    failures = []
    for d in details:
        if not isinstance(d, dict):
            raise ReportError("failure detail is not an object")
        failures.append(TlsFailure(result_type=_str(d, "result-type", 64).lower() or "unknown",
                                   sending_mta_ip=_str(d, "sending-mta-ip", 45),
                                   receiving_mx_hostname=_str(d, "receiving-mx-hostname", 253).lower(),
                                   count=_count(d, "failed-session-count")))
    return TlsPolicy(policy_type=ptype, domain=domain, success=_count(summary, "total-successful-session-count"),
                     failure=_count(summary, "total-failure-session-count"), failures=failures)


def parse_tlsrpt(data: bytes) -> TlsReport:
    """Read one TLS report. Raises ReportError for anything malformed."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ReportError(f"malformed JSON: {str(exc)[:200]}") from None
    if not isinstance(doc, dict):
        raise ReportError("TLS report is not a JSON object")
    org, report_id = _str(doc, "organization-name"), _str(doc, "report-id")
    if not org or not report_id:
        raise ReportError("TLS report without organization-name or report-id")
    dates = doc.get("date-range")
    if not isinstance(dates, dict):
        raise ReportError("TLS report without a date-range")
    policies = doc.get("policies")
    if not isinstance(policies, list) or not policies or len(policies) > MAX_POLICIES:
        raise ReportError("TLS report without policies (or too many)")
    return TlsReport(org_name=org, report_id=report_id,
                     begin=_when(dates.get("start-datetime"), "start-datetime"),
                     end=_when(dates.get("end-datetime"), "end-datetime"),
                     policies=[_policy(p) for p in policies])
