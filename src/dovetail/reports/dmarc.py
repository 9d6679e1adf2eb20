"""DMARC aggregate reports (RFC 7489 §7.2, appendix C): the XML a reporter sends, read into records.

Our own reader over ``defusedxml`` rather than ``parsedmarc``: parsedmarc brings a dozen heavy
dependencies (Elasticsearch, OpenSearch, Kafka and cloud clients, geoip databases, mail-parser) for
what is here a walk over a small, fixed schema; ``defusedxml`` is the field's guard for untrusted XML.
DTDs are refused outright (no entity can expand: billion laughs, external entities), the document is
read as a stream of start/end events so nesting deeper than :data:`MAX_DEPTH` stops the read early,
and the number of records is capped. Namespaces (DMARC 2.0 drafts, some reporters) are ignored.
"""

from __future__ import annotations

import datetime as dt
import io
import ipaddress
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import defusedxml
import defusedxml.ElementTree as DET

MAX_DEPTH = 16  # feedback/record/auth_results/dkim/result is 5 deep
MAX_RECORDS = 20_000


class ReportError(ValueError):
    """A report we cannot read (malformed, unsafe or too big); the message is kept aside."""


@dataclass(frozen=True)
class DmarcRow:
    source_ip: str
    count: int
    disposition: str
    header_from: str
    dkim_aligned: bool
    spf_aligned: bool
    dkim_result: str
    spf_result: str


@dataclass
class DmarcReport:
    org_name: str
    report_id: str
    domain: str
    begin: dt.datetime
    end: dt.datetime
    policy: str
    rows: list[DmarcRow] = field(default_factory=list)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _tree(data: bytes) -> ET.Element:
    depth = 0
    root: ET.Element | None = None
    try:
        for event, elem in DET.iterparse(io.BytesIO(data), events=("start", "end"), forbid_dtd=True):
            if event == "start":
                depth += 1
                if depth > MAX_DEPTH:
                    raise ReportError(f"XML nested deeper than {MAX_DEPTH} levels")
                if root is None:
                    root = elem
            else:
                depth -= 1
    except defusedxml.DefusedXmlException as exc:
        raise ReportError(f"unsafe XML refused: {exc.__class__.__name__}") from None
    except ET.ParseError as exc:
        raise ReportError(f"malformed XML: {exc}") from None
    if root is None:
        raise ReportError("empty XML document")
    return root


def _child(elem: ET.Element | None, name: str) -> ET.Element | None:
    if elem is None:
        return None
    for child in elem:
        if _local(child.tag) == name:
            return child
    return None


def _children(elem: ET.Element | None, name: str) -> list[ET.Element]:
    return [c for c in elem if _local(c.tag) == name] if elem is not None else []


def _text(elem: ET.Element | None, *path: str, limit: int = 255) -> str:
    for name in path:
        elem = _child(elem, name)
    return (elem.text or "").strip()[:limit] if elem is not None else ""


def _when(text: str, what: str) -> dt.datetime:
    try:
        return dt.datetime.fromtimestamp(int(text), dt.UTC).replace(tzinfo=None)
    except (ValueError, OverflowError, OSError):
        raise ReportError(f"{what} {text!r} is not a Unix time") from None


def _row(record: ET.Element) -> DmarcRow:
    row = _child(record, "row")
    ip = _text(row, "source_ip")
    try:
        ip = str(ipaddress.ip_address(ip))
    except ValueError:
        raise ReportError(f"record with source_ip {ip!r}, not an IP address") from None
    try:
        count = int(_text(row, "count"))
    except ValueError:
        raise ReportError("record without a numeric count") from None
    if count < 0:
        raise ReportError("record with a negative count")
    auth = _child(record, "auth_results")
    dkims = [_text(d, "result").lower() for d in _children(auth, "dkim")]
    spfs = [_text(s, "result").lower() for s in _children(auth, "spf")]
    return DmarcRow(
        source_ip=ip, count=count,
        disposition=_text(row, "policy_evaluated", "disposition", limit=12).lower() or "none",
        header_from=_text(record, "identifiers", "header_from", limit=253).lower(),
        dkim_aligned=_text(row, "policy_evaluated", "dkim").lower() == "pass",
        spf_aligned=_text(row, "policy_evaluated", "spf").lower() == "pass",
        dkim_result=("pass" if "pass" in dkims else (dkims[0] if dkims else "none"))[:12],
        spf_result=("pass" if "pass" in spfs else (spfs[0] if spfs else "none"))[:12])


def parse_dmarc(data: bytes) -> DmarcReport:
    """Read one aggregate report. Raises ReportError for anything malformed or unsafe."""
    root = _tree(data)
    if _local(root.tag) != "feedback":
        raise ReportError(f"root element <{_local(root.tag)}>, expected <feedback>")
    meta = _child(root, "report_metadata")
    published = _child(root, "policy_published")
    org, report_id, domain = _text(meta, "org_name"), _text(meta, "report_id"), _text(published, "domain", limit=253)
    if not org or not report_id or not domain:
        raise ReportError("report without org_name, report_id or policy_published/domain")
    records = _children(root, "record")
    if len(records) > MAX_RECORDS:
        raise ReportError(f"report has {len(records)} records, more than {MAX_RECORDS}")
    return DmarcReport(org_name=org, report_id=report_id, domain=domain.lower().rstrip("."),
                       begin=_when(_text(meta, "date_range", "begin"), "date_range/begin"),
                       end=_when(_text(meta, "date_range", "end"), "date_range/end"),
                       policy=_text(published, "p", limit=12).lower(), rows=[_row(r) for r in records])
