"""Reports shaped as the big reporters send them (element order, namespaces, file names, MIME types),
and the mail that carries them to our ``rua`` addresses."""

from __future__ import annotations

import gzip
import io
import json
import zipfile
from email.message import EmailMessage

# 2026-12-04 00:00:00 .. 23:59:59 UTC
BEGIN, END = 1796342400, 1796428799
DAY = "2026-12-04"


def google_dmarc(domain: str = "acme.example", report_id: str = "15683291823746501928") -> bytes:
    """Google's shape: no namespace, <version>, extra_contact_info, one <record> per source."""
    return f"""<?xml version="1.0" encoding="UTF-8" ?>
<feedback>
  <version>1.0</version>
  <report_metadata>
    <org_name>google.com</org_name>
    <email>noreply-dmarc-support@google.com</email>
    <extra_contact_info>https://support.google.com/a/answer/2466580</extra_contact_info>
    <report_id>{report_id}</report_id>
    <date_range>
      <begin>{BEGIN}</begin>
      <end>{END}</end>
    </date_range>
  </report_metadata>
  <policy_published>
    <domain>{domain}</domain>
    <adkim>r</adkim>
    <aspf>r</aspf>
    <p>none</p>
    <sp>none</sp>
    <pct>100</pct>
    <np>none</np>
  </policy_published>
  <record>
    <row>
      <source_ip>192.0.2.10</source_ip>
      <count>12</count>
      <policy_evaluated>
        <disposition>none</disposition>
        <dkim>pass</dkim>
        <spf>pass</spf>
      </policy_evaluated>
    </row>
    <identifiers>
      <header_from>{domain}</header_from>
    </identifiers>
    <auth_results>
      <dkim>
        <domain>{domain}</domain>
        <result>pass</result>
        <selector>s2026</selector>
      </dkim>
      <spf>
        <domain>{domain}</domain>
        <result>pass</result>
      </spf>
    </auth_results>
  </record>
  <record>
    <row>
      <source_ip>198.51.100.7</source_ip>
      <count>3</count>
      <policy_evaluated>
        <disposition>none</disposition>
        <dkim>fail</dkim>
        <spf>fail</spf>
      </policy_evaluated>
    </row>
    <identifiers>
      <header_from>{domain}</header_from>
    </identifiers>
    <auth_results>
      <spf>
        <domain>spammer.example</domain>
        <result>softfail</result>
      </spf>
    </auth_results>
  </record>
</feedback>
""".encode()


def microsoft_dmarc(domain: str = "acme.example", report_id: str = "a1b2c3d4e5f60718293a4b5c6d7e8f90") -> bytes:
    """Microsoft's shape: xmlns declarations on <feedback>, envelope_to/envelope_from, a quarantine."""
    return f"""<?xml version="1.0"?>
<feedback xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <version>1.0</version>
  <report_metadata>
    <org_name>Enterprise Outlook</org_name>
    <email>dmarcreport@microsoft.com</email>
    <report_id>{report_id}</report_id>
    <date_range>
      <begin>{BEGIN}</begin>
      <end>{END}</end>
    </date_range>
  </report_metadata>
  <policy_published>
    <domain>{domain}</domain>
    <adkim>r</adkim>
    <aspf>r</aspf>
    <p>quarantine</p>
    <sp>quarantine</sp>
    <pct>100</pct>
    <fo>0</fo>
  </policy_published>
  <record>
    <row>
      <source_ip>2001:db8::25</source_ip>
      <count>5</count>
      <policy_evaluated>
        <disposition>quarantine</disposition>
        <dkim>fail</dkim>
        <spf>fail</spf>
      </policy_evaluated>
    </row>
    <identifiers>
      <envelope_to>outlook.com</envelope_to>
      <envelope_from>{domain}</envelope_from>
      <header_from>{domain}</header_from>
    </identifiers>
    <auth_results>
      <dkim>
        <domain>{domain}</domain>
        <selector>old</selector>
        <result>fail</result>
      </dkim>
      <spf>
        <domain>{domain}</domain>
        <scope>mfrom</scope>
        <result>fail</result>
      </spf>
    </auth_results>
  </record>
  <record>
    <row>
      <source_ip>192.0.2.10</source_ip>
      <count>4</count>
      <policy_evaluated>
        <disposition>none</disposition>
        <dkim>pass</dkim>
        <spf>fail</spf>
      </policy_evaluated>
    </row>
    <identifiers>
      <envelope_to>hotmail.com</envelope_to>
      <envelope_from>bounce.{domain}</envelope_from>
      <header_from>{domain}</header_from>
    </identifiers>
    <auth_results>
      <dkim>
        <domain>{domain}</domain>
        <selector>s2026</selector>
        <result>pass</result>
      </dkim>
      <spf>
        <domain>bounce.{domain}</domain>
        <scope>mfrom</scope>
        <result>pass</result>
      </spf>
    </auth_results>
  </record>
</feedback>
""".encode()


def google_tlsrpt(domain: str = "acme.example", report_id: str = "2026-12-04T00:00:00Z_acme.example") -> bytes:
    """Google's SMTP TLS report (RFC 8460 §4.4 layout)."""
    return json.dumps({
        "organization-name": "Google Inc.",
        "date-range": {"start-datetime": "2026-12-04T00:00:00Z", "end-datetime": "2026-12-04T23:59:59Z"},
        "contact-info": "smtp-tls-reporting@google.com",
        "report-id": report_id,
        "policies": [{
            "policy": {"policy-type": "sts",
                       "policy-string": ["version: STSv1", "mode: testing", "mx: mx.test.example", "max_age: 604800"],
                       "policy-domain": domain, "mx-host": ["mx.test.example"]},
            "summary": {"total-successful-session-count": 120, "total-failure-session-count": 3},
            "failure-details": [
                {"result-type": "certificate-expired", "sending-mta-ip": "209.85.220.41",
                 "receiving-mx-hostname": "mx.test.example", "failed-session-count": 2},
                {"result-type": "starttls-not-supported", "sending-mta-ip": "209.85.220.42",
                 "receiving-mx-hostname": "mx.test.example", "failed-session-count": 1}]}],
    }).encode()


def zipped(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(name, data)
    return buf.getvalue()


def report_mail(to: str, sender: str, subject: str, attachment: bytes, maintype: str, subtype: str,
                filename: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{abs(hash((subject, filename)))}@reporter.example>"
    msg.set_content("This is an aggregate report.\n")
    msg.add_attachment(attachment, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes()


def google_dmarc_mail(domain: str = "acme.example", **kw: str) -> bytes:
    """Google sends a zip: ``google.com!<domain>!<begin>!<end>.zip``."""
    name = f"google.com!{domain}!{BEGIN}!{END}"
    return report_mail(f"dmarc-reports@{domain}", "noreply-dmarc-support@google.com",
                       f"Report domain: {domain} Submitter: google.com Report-ID: {kw.get('report_id', '')}",
                       zipped(f"{name}.xml", google_dmarc(domain, **kw)), "application", "zip", f"{name}.zip")


def microsoft_dmarc_mail(domain: str = "acme.example") -> bytes:
    """Microsoft sends gzip: ``enterprise.protection.outlook.com!<domain>!<begin>!<end>.xml.gz``."""
    name = f"enterprise.protection.outlook.com!{domain}!{BEGIN}!{END}.xml.gz"
    return report_mail(f"dmarc-reports@{domain}", "dmarcreport@microsoft.com",
                       f"Report Domain: {domain} Submitter: enterprise.protection.outlook.com",
                       gzip.compress(microsoft_dmarc(domain)), "application", "gzip", name)


def google_tls_mail(domain: str = "acme.example") -> bytes:
    """RFC 8460 §5.3: application/tlsrpt+gzip, ``<sender>!<domain>!<begin>!<end>.json.gz``."""
    name = f"google.com!{domain}!{BEGIN}!{END}!001.json.gz"
    return report_mail(f"tls-reports@{domain}", "noreply-smtp-tls-reporting@google.com",
                       f"Report Domain: {domain} Submitter: google.com Report-ID: <x@google.com>",
                       gzip.compress(google_tlsrpt(domain)), "application", "tlsrpt+gzip", name)
