"""Reports and MTA-STS through a running master: reporters' mail to the rua addresses we publish comes in
over the real MX, is read after delivery and shows in the API; the web listener serves each domain's
MTA-STS policy by Host."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..reports import samples
from .harness import Master, cli, free_port, wait_for


def ok(m: Master, *args: str) -> str:
    out = cli(m.data_dir, *args)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[Master, httpx.Client, str, str]]:
    m = Master.create(tmp_path)
    ok(m, "tenant", "add", "beta")
    ok(m, "domain", "add", "beta.example", "--tenant", "beta")
    ok(m, "domain", "set", "acme.example", "--mta-sts", "enforce")
    acme = json.loads(ok(m, "token", "add", "--tenant", "acme", "--json"))["token"]
    beta = json.loads(ok(m, "token", "add", "--tenant", "beta", "--json"))["token"]
    http = free_port()
    m.start("--http", f"127.0.0.1:{http}")
    web = httpx.Client(base_url=f"http://127.0.0.1:{http}", timeout=30)
    try:
        yield m, web, acme, beta
    finally:
        web.close()
        m.stop()
        m.cleanup()


def test_mta_sts_policy_from_the_running_web_listener(running) -> None:
    m, web, _, _ = running
    r = web.get("/.well-known/mta-sts.txt", headers={"Host": "mta-sts.acme.example"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert r.text.startswith("version: STSv1\r\nmode: enforce\r\nmx: mx.test.example\r\n")
    zone = ok(m, "dns", "acme.example")
    assert f"id={hashlib.sha256(r.content).hexdigest()[:20]}" in zone
    assert "mode: testing" in web.get("/.well-known/mta-sts.txt", headers={"Host": "mta-sts.beta.example"}).text
    assert web.get("/.well-known/mta-sts.txt", headers={"Host": "mta-sts.nowhere.example"}).status_code == 404
    assert web.get("/.well-known/mta-sts.txt").status_code == 404  # Host 127.0.0.1:port


def test_reports_mailed_to_the_rua_addresses_show_in_the_api(running) -> None:
    m, web, acme, beta = running
    bomb = samples.report_mail("dmarc-reports@acme.example", "evil@ext.example", "report", samples.zipped(
        "r.xml", b"<" + b"a" * 30_000_000), "application", "zip", "r.zip")
    mails = [("noreply-dmarc-support@google.com", "dmarc-reports@acme.example", samples.google_dmarc_mail()),
             ("dmarcreport@microsoft.com", "dmarc-reports@acme.example", samples.microsoft_dmarc_mail()),
             ("noreply-dmarc-support@google.com", "dmarc-reports@acme.example", samples.google_dmarc_mail()),
             ("noreply-smtp-tls-reporting@google.com", "tls-reports@acme.example", samples.google_tls_mail()),
             ("evil@ext.example", "dmarc-reports@acme.example", bomb),
             ("evil@ext.example", "dmarc-reports@acme.example", samples.google_dmarc_mail("beta.example"))]
    with m.smtp() as s:
        for sender, rcpt, data in mails:
            s.sendmail(sender, [rcpt], data)

    acme_h = {"Authorization": f"Bearer {acme}"}

    def dmarc_in() -> dict | None:
        body = web.get("/api/v1/reports/dmarc", params={"domain": "acme.example"}, headers=acme_h).json()
        return body if body["days"] and body["days"][0]["reports"] == 2 else None

    body = wait_for(dmarc_in, 60, "two DMARC reports in the API")
    assert body["days"] == [{"day": samples.DAY, "domain": "acme.example", "reports": 2, "messages": 24,
                             "passed": 16, "fail": 8}]  # the google report mailed twice counts once
    tls = wait_for(lambda: web.get("/api/v1/reports/tls", headers=acme_h).json()["days"], 60, "the TLS report")
    assert tls == [{"day": samples.DAY, "domain": "acme.example", "reports": 1, "success": 120, "failure": 3}]

    def two_rejects() -> list[dict] | None:
        rows = json.loads(ok(m, "reports", "rejected", "--json"))
        return rows if len(rows) == 2 else None

    reasons = " | ".join(r["reason"] for r in wait_for(two_rejects, 60, "two refused reports"))
    assert "decompresses to more than" in reasons and "about beta.example, not a domain of tenant acme" in reasons
    intake = m.data_dir / "mail" / "acme" / "_reports"
    assert len([p for sub in ("new", "cur") for p in (intake / sub).glob("*")]) == len(mails)  # all kept
    assert "report refused, message kept aside" in m.log()

    # the tenant wall: beta reads none of acme's figures and the report sent about beta was not stored
    beta_h = {"Authorization": f"Bearer {beta}"}
    r = web.get("/api/v1/reports/dmarc", params={"domain": "acme.example"}, headers=beta_h)
    assert r.status_code == 404
    assert web.get("/api/v1/reports/dmarc", headers=beta_h).json()["days"] == []
