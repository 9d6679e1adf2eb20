"""MTA-STS policies served by Host, and the reports received shown in the API and on a page, behind the
tenant wall."""

from __future__ import annotations

import hashlib

import pytest

from dovetail.outbound.dnsrecords import MTA_STS_MAX_AGE
from dovetail.reports.intake import ReportIntake
from dovetail.web import auth
from dovetail.web.integrations import dns_records

from ..reports import samples
from .conftest import WebEnv
from .test_ui import _csrf, _login

POLICY = "/.well-known/mta-sts.txt"


@pytest.fixture
def two(web_sqlite: WebEnv) -> tuple[WebEnv, str, str]:
    d = web_sqlite.directory
    for t in ("alpha", "beta"):
        d.tenant_add(t)
        d.domain_add(f"{t}.test", t)
    intake = ReportIntake(web_sqlite.engine)
    for t in ("alpha", "beta"):
        assert intake.process(t, f"dmarc-reports@{t}.test", samples.google_dmarc_mail(f"{t}.test")).dmarc == 1
        assert intake.process(t, f"tls-reports@{t}.test", samples.google_tls_mail(f"{t}.test")).tls == 1
    intake.process("alpha", "dmarc-reports@alpha.test", samples.microsoft_dmarc_mail("alpha.test"))
    alpha = auth.token_add(web_sqlite.engine, "tenant", "alpha").token
    beta = auth.token_add(web_sqlite.engine, "tenant", "beta").token
    return web_sqlite, alpha, beta


def _sts_record(web: WebEnv, domain: str) -> str:
    (rec,) = [r for r in dns_records(web.cfg, web.engine, domain) if r["name"] == f"_mta-sts.{domain}"]
    return rec["value"]


def test_policy_is_served_by_host_without_login(web_sqlite: WebEnv) -> None:
    web = web_sqlite
    web.directory.tenant_add("alpha")
    web.directory.domain_add("alpha.test", "alpha")
    r = web.client.get(POLICY, headers={"Host": "mta-sts.alpha.test"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    lines = r.text.split("\r\n")
    assert lines[:2] == ["version: STSv1", "mode: testing"]
    assert f"mx: {web.cfg.hostname}" in lines and f"max_age: {MTA_STS_MAX_AGE}" in lines
    assert "set-cookie" not in r.headers
    # the id published in DNS is the hash of exactly what is served
    assert _sts_record(web, "alpha.test") == f"v=STSv1; id={hashlib.sha256(r.content).hexdigest()[:20]}"
    # with a port, upper case or a trailing dot, as clients send Host
    assert web.client.get(POLICY, headers={"Host": "MTA-STS.Alpha.Test.:8443"}).text == r.text


@pytest.mark.parametrize("host", ["mta-sts.other.test", "alpha.test", "mta-sts.", "127.0.0.1", "[::1]:80",
                                  "mta-sts.alpha.test.evil.test"])
def test_policy_is_404_for_names_we_do_not_serve(web_sqlite: WebEnv, host: str) -> None:
    web_sqlite.directory.tenant_add("alpha")
    web_sqlite.directory.domain_add("alpha.test", "alpha")
    r = web_sqlite.client.get(POLICY, headers={"Host": host, "Accept": "text/html"}, follow_redirects=False)
    assert r.status_code == 404 and "STSv1" not in r.text


def test_disabled_domain_serves_no_policy(web_sqlite: WebEnv) -> None:
    d = web_sqlite.directory
    d.tenant_add("alpha")
    d.domain_add("alpha.test", "alpha")
    d.domain_set("alpha.test", enabled=False)
    assert web_sqlite.client.get(POLICY, headers={"Host": "mta-sts.alpha.test"}).status_code == 404


def test_mode_per_domain_moves_the_id_only_when_the_policy_changes(web_sqlite: WebEnv) -> None:
    web, d = web_sqlite, web_sqlite.directory
    d.tenant_add("alpha")
    d.domain_add("alpha.test", "alpha")
    d.domain_add("beta.test", "alpha")
    before = _sts_record(web, "alpha.test")
    assert _sts_record(web, "alpha.test") == before
    d.domain_set("alpha.test", mta_sts_mode="enforce")
    served = web.client.get(POLICY, headers={"Host": "mta-sts.alpha.test"})
    assert "mode: enforce" in served.text
    after = _sts_record(web, "alpha.test")
    assert after != before and after == f"v=STSv1; id={hashlib.sha256(served.content).hexdigest()[:20]}"
    assert "mode: testing" in web.client.get(POLICY, headers={"Host": "mta-sts.beta.test"}).text  # per domain
    d.domain_set("alpha.test", mta_sts_mode="testing")
    assert _sts_record(web, "alpha.test") == before


def test_api_shows_reports_per_day_and_source(two: tuple[WebEnv, str, str]) -> None:
    web, alpha, _ = two
    r = web.client.get("/api/v1/reports/dmarc", params={"domain": "alpha.test"}, headers=web.bearer(alpha))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["days"] == [{"day": samples.DAY, "domain": "alpha.test", "reports": 2, "messages": 24,
                             "passed": 16, "fail": 8}]
    assert {s["source_ip"] for s in body["sources"]} == {"192.0.2.10", "198.51.100.7", "2001:db8::25"}
    assert {(x["org_name"], len(x["records"])) for x in body["reports"]} == {("google.com", 2),
                                                                              ("Enterprise Outlook", 2)}
    tls = web.client.get("/api/v1/reports/tls", params={"domain": "alpha.test"}, headers=web.bearer(alpha)).json()
    assert tls["days"][0]["failure"] == 3 and tls["failures"][0] == {"result_type": "certificate-expired", "count": 2}
    # date range: the day itself is inside, the day after is not
    inside = {"domain": "alpha.test", "from": samples.DAY, "to": samples.DAY}
    assert web.client.get("/api/v1/reports/dmarc", params=inside, headers=web.bearer(alpha)).json()["days"]
    later = {"domain": "alpha.test", "from": "2026-12-05"}
    assert web.client.get("/api/v1/reports/dmarc", params=later, headers=web.bearer(alpha)).json()["days"] == []


def test_tenant_sees_only_its_domains_reports(two: tuple[WebEnv, str, str]) -> None:
    web, alpha, beta = two
    for kind in ("dmarc", "tls"):
        r = web.client.get(f"/api/v1/reports/{kind}", params={"domain": "beta.test"}, headers=web.bearer(alpha))
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
        everything = web.client.get(f"/api/v1/reports/{kind}", headers=web.bearer(alpha)).json()
        assert {d["domain"] for d in everything["days"]} == {"alpha.test"}
        theirs = web.client.get(f"/api/v1/reports/{kind}", headers=web.bearer(beta)).json()
        assert {d["domain"] for d in theirs["days"]} == {"beta.test"}
        admin = web.client.get(f"/api/v1/reports/{kind}", headers=web.bearer(web.admin_token)).json()
        assert {d["domain"] for d in admin["days"]} == {"alpha.test", "beta.test"}
    assert web.client.get("/api/v1/reports/dmarc").status_code == 401


@pytest.mark.parametrize("params", [{"from": "yesterday"}, {"from": "2026-12-05", "to": "2026-12-01"}])
def test_bad_ranges_are_problems(two: tuple[WebEnv, str, str], params: dict[str, str]) -> None:
    web, alpha, _ = two
    r = web.client.get("/api/v1/reports/dmarc", params=params, headers=web.bearer(alpha))
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"


def test_reports_page_draws_the_days_and_tables(two: tuple[WebEnv, str, str]) -> None:
    web, _, _ = two
    assert _login(web).status_code == 303
    page = web.client.get("/domains/alpha.test/reports")
    assert page.status_code == 200
    html = page.text
    assert html.count("<svg") == 2 and "DMARC results per day" in html and "TLS sessions per day" in html
    assert "198.51.100.7" in html and "certificate-expired" in html and "Enterprise Outlook" not in html.split(
        "<h2>TLS")[1]
    assert 'href="/domains/alpha.test/reports"' in web.client.get("/domains/alpha.test").text
    assert web.client.get("/domains/nowhere.test/reports").status_code == 404


def test_tenant_user_cannot_open_another_tenants_report_page(two: tuple[WebEnv, str, str]) -> None:
    web, _, _ = two
    auth.user_add(web.engine, "ops@alpha.test", "alpha password 1", role="tenant_admin", tenant="alpha")
    assert _login(web, "alpha password 1", "ops@alpha.test").status_code == 303
    assert web.client.get("/domains/alpha.test/reports").status_code == 200
    assert web.client.get("/domains/beta.test/reports").status_code == 404


def test_mode_over_the_api_patch(web_sqlite: WebEnv) -> None:
    web = web_sqlite
    web.directory.tenant_add("alpha")
    web.directory.domain_add("alpha.test", "alpha")
    token = auth.token_add(web.engine, "tenant", "alpha").token
    r = web.client.patch("/api/v1/domains/alpha.test", json={"mta_sts_mode": "enforce"}, headers=web.bearer(token))
    assert r.status_code == 200 and r.json()["mta_sts_mode"] == "enforce"
    assert "mode: enforce" in web.client.get(POLICY, headers={"Host": "mta-sts.alpha.test"}).text
    bad = web.client.patch("/api/v1/domains/alpha.test", json={"mta_sts_mode": "strict"}, headers=web.bearer(token))
    assert bad.status_code == 422 and web.directory.domain_get("alpha.test").mta_sts_mode == "enforce"


def test_mode_from_the_domain_page(web_sqlite: WebEnv) -> None:
    web = web_sqlite
    web.directory.tenant_add("alpha")
    web.directory.domain_add("alpha.test", "alpha")
    assert _login(web).status_code == 303
    page = web.client.get("/domains/alpha.test").text
    assert '<option value="testing" selected>' in page
    r = web.client.post("/domains/alpha.test/settings", data={"csrf": _csrf(page), "enabled": "yes",
                                                              "mta_sts_mode": "enforce"}, follow_redirects=False)
    assert r.status_code == 303
    assert web.directory.domain_get("alpha.test").mta_sts_mode == "enforce"
    assert '<option value="enforce" selected>' in web.client.get("/domains/alpha.test").text
