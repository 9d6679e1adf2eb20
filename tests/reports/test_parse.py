"""Reading reports from strangers: real shapes parse; bombs, entities, deep or broken documents are refused
with a reason (ReportError/UnpackError), never an exception of another kind, and within bounded memory."""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import zipfile

import pytest

from dovetail.reports import unpack
from dovetail.reports.dmarc import MAX_DEPTH, ReportError, parse_dmarc
from dovetail.reports.tlsrpt import parse_tlsrpt
from dovetail.reports.unpack import UnpackError, report_files

from . import samples


def test_google_zip_report_parses_to_records() -> None:
    (f,) = report_files(samples.google_dmarc_mail())
    assert f.kind == "dmarc" and f.name.endswith(".xml")
    report = parse_dmarc(f.data)
    assert (report.org_name, report.domain, report.policy) == ("google.com", "acme.example", "none")
    assert report.begin == dt.datetime(2026, 12, 4) and report.end.date() == dt.date(2026, 12, 4)
    good, bad = report.rows
    assert (good.source_ip, good.count, good.dkim_aligned, good.spf_aligned) == ("192.0.2.10", 12, True, True)
    assert (bad.source_ip, bad.count, bad.dkim_aligned, bad.spf_aligned) == ("198.51.100.7", 3, False, False)
    assert (bad.dkim_result, bad.spf_result) == ("none", "softfail")


def test_microsoft_gzip_report_parses_with_ipv6_and_quarantine() -> None:
    (f,) = report_files(samples.microsoft_dmarc_mail())
    report = parse_dmarc(f.data)
    assert report.org_name == "Enterprise Outlook" and report.policy == "quarantine"
    first, second = report.rows
    assert (first.source_ip, first.disposition, first.dkim_result) == ("2001:db8::25", "quarantine", "fail")
    assert second.dkim_aligned and not second.spf_aligned and second.spf_result == "pass"


def test_namespaced_dmarc2_report_is_read() -> None:
    xml = samples.google_dmarc().replace(b"<feedback>", b'<feedback xmlns="urn:ietf:params:xml:ns:dmarc-2.0">')
    assert len(parse_dmarc(xml).rows) == 2


def test_tls_report_gzip_parses_failures_by_type() -> None:
    (f,) = report_files(samples.google_tls_mail())
    assert f.kind == "tls"
    report = parse_tlsrpt(f.data)
    (policy,) = report.policies
    assert (policy.policy_type, policy.domain, policy.success, policy.failure) == ("sts", "acme.example", 120, 3)
    assert [(x.result_type, x.count) for x in policy.failures] == [("certificate-expired", 2),
                                                                   ("starttls-not-supported", 1)]


def test_plain_json_attachment() -> None:
    raw = samples.report_mail("tls-reports@acme.example", "r@x.example", "r", samples.google_tlsrpt(),
                              "application", "tlsrpt+json", "r.json")
    (f,) = report_files(raw)
    assert parse_tlsrpt(f.data).org_name == "Google Inc."


def test_zip_bomb_is_refused_after_reading_at_most_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(unpack, "MAX_FILE_BYTES", 1_000_000)
    bomb = samples.zipped("r.xml", b"<" + b"a" * 50_000_000)  # 50 MB of one byte: ~50 KB zipped
    assert len(bomb) < 100_000
    raw = samples.report_mail("dmarc-reports@acme.example", "x@y.example", "r", bomb, "application", "zip", "r.zip")
    with pytest.raises(UnpackError, match="decompresses to more than"):
        report_files(raw)


def test_zip_claiming_a_small_size_is_still_capped() -> None:
    """The cap counts bytes actually inflated: a central directory that lies about file_size changes nothing."""
    data = samples.zipped("r.xml", b"x" * (unpack.MAX_FILE_BYTES + 10))
    with pytest.raises(UnpackError, match="more than"):
        unpack.unzip(data, unpack._Budget())


def test_gzip_bomb_is_refused() -> None:
    bomb = gzip.compress(b"\0" * (unpack.MAX_FILE_BYTES + 1))
    raw = samples.report_mail("dmarc-reports@acme.example", "x@y.example", "r", bomb, "application", "gzip", "r.gz")
    with pytest.raises(UnpackError, match="more than"):
        report_files(raw)


def test_too_many_zip_entries_are_refused() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i in range(unpack.MAX_ZIP_ENTRIES + 1):
            z.writestr(f"r{i}.xml", b"<feedback/>")
    with pytest.raises(UnpackError, match="entries"):
        unpack.unzip(buf.getvalue(), unpack._Budget())


def test_broken_archives_are_unpack_errors() -> None:
    with pytest.raises(UnpackError):
        unpack.unzip(b"PK\x03\x04 not really", unpack._Budget())
    with pytest.raises(UnpackError):
        unpack.gunzip(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(UnpackError, match="truncated"):
        unpack.gunzip(gzip.compress(samples.google_dmarc())[:-30])


def test_mail_without_report_is_refused() -> None:
    raw = b"From: a@b.example\r\nTo: dmarc-reports@acme.example\r\nSubject: hi\r\n\r\nplain words\r\n"
    with pytest.raises(UnpackError, match="no report attached"):
        report_files(raw)


def test_billion_laughs_is_refused_without_expanding() -> None:
    lol = (b'<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
           + b"".join(b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10)
                      for i in range(1, 10))
           + b"]>\n<feedback><report_metadata><org_name>&lol9;</org_name></report_metadata></feedback>")
    with pytest.raises(ReportError, match="unsafe XML"):
        parse_dmarc(lol)


def test_external_entity_is_refused() -> None:
    xxe = (b'<?xml version="1.0"?><!DOCTYPE f [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
           b"<feedback><report_metadata><org_name>&x;</org_name></report_metadata></feedback>")
    with pytest.raises(ReportError, match="unsafe XML"):
        parse_dmarc(xxe)


def test_deep_xml_is_refused() -> None:
    deep = b"<feedback>" + b"<a>" * (MAX_DEPTH + 5) + b"</a>" * (MAX_DEPTH + 5) + b"</feedback>"
    with pytest.raises(ReportError, match="deeper"):
        parse_dmarc(deep)
    very_deep = b"<a>" * 200_000 + b"</a>" * 200_000
    with pytest.raises(ReportError, match="deeper"):
        parse_dmarc(very_deep)


@pytest.mark.parametrize("xml, reason", [
    (b"<feedback><report_metadata>", "malformed XML"),
    (b"<html><body>not a report</body></html>", "expected <feedback>"),
    (b"<feedback><report_metadata><org_name>x</org_name></report_metadata></feedback>", "without org_name"),
    (samples.google_dmarc().replace(b"192.0.2.10", b"not-an-ip"), "not an IP"),
    (samples.google_dmarc().replace(b"<count>12</count>", b"<count>many</count>"), "numeric count"),
    (samples.google_dmarc().replace(str(samples.BEGIN).encode(), b"yesterday"), "Unix time"),
], ids=["truncated", "html", "no-org", "bad-ip", "bad-count", "bad-date"])
def test_malformed_dmarc_reports_say_why(xml: bytes, reason: str) -> None:
    with pytest.raises(ReportError, match=reason):
        parse_dmarc(xml)


@pytest.mark.parametrize("doc, reason", [
    (b"{not json", "malformed JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "malformed JSON|not a JSON object"),
    (b"[]", "not a JSON object"),
    (json.dumps({"organization-name": "x", "report-id": "y", "date-range": {}}).encode(), "start-datetime|polic"),
    (samples.google_tlsrpt().replace(b'"sts"', b'"carrier-pigeon"'), "policy-type"),
    (samples.google_tlsrpt().replace(b'"failed-session-count": 2', b'"failed-session-count": -2'), "not a count"),
], ids=["broken", "deep", "array", "no-dates", "policy-type", "negative"])
def test_malformed_tls_reports_say_why(doc: bytes, reason: str) -> None:
    with pytest.raises(ReportError, match=reason):
        parse_tlsrpt(doc)
