"""The admin UI through HTTP: login, CSRF, throttling, forms, the sandboxed message viewer."""

from __future__ import annotations

import re

from dovetail.queue import Envelope, Queue, QueueRecipient

from .conftest import ADMIN_EMAIL, ADMIN_PASSWORD, WebEnv


def _login(web: WebEnv, password: str = ADMIN_PASSWORD, email: str = ADMIN_EMAIL):  # noqa: ANN202
    c = web.client
    c.get("/login")
    return c.post("/login", data={"email": email, "password": password, "next": "/",
                                  "csrf": c.cookies.get("dovetail_login_csrf")}, follow_redirects=False)


def _csrf(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def test_login_sets_strict_httponly_cookie_and_forms_need_csrf(web: WebEnv) -> None:
    c = web.client
    assert c.get("/", follow_redirects=False).headers["location"] == "/login?next=%2F"
    r = _login(web)
    assert r.status_code == 303
    cookie = r.headers["set-cookie"]
    assert "dovetail_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Secure" not in cookie  # plain HTTP on loopback; over https the cookie is Secure
    page = c.get("/tenants")
    assert page.status_code == 200 and "Add a tenant" in page.text
    refused = c.post("/tenants", data={"name": "acme"}, follow_redirects=False)
    assert refused.status_code == 403
    assert web.directory.tenant_list() == []
    ok = c.post("/tenants", data={"name": "acme", "csrf": _csrf(page.text)}, follow_redirects=False)
    assert ok.status_code == 303 and ok.headers["location"].startswith("/tenants/acme")
    assert [t["name"] for t in web.directory.tenant_list()] == ["acme"]


def test_domain_and_mailbox_forms(web: WebEnv) -> None:
    c = web.client
    _login(web)
    web.directory.tenant_add("acme")
    page = c.get("/tenants/acme")
    token = _csrf(page.text)
    r = c.post("/tenants/acme/domains", data={"name": "Acme.Test", "csrf": token})
    assert r.status_code == 200 and "Domain acme.test added." in r.text
    r = c.post("/domains/acme.test/mailboxes", data={"local_part": "bob", "password": "hunter2hunter2",
                                                     "quota": "2M", "csrf": token})
    assert "Mailbox bob@acme.test created." in r.text and "<meter" in r.text
    assert web.directory.mailbox_list() == [{"address": "bob@acme.test", "tenant": "acme",
                                             "quota_bytes": 2 * 1024 * 1024, "enabled": True}]
    bad = c.post("/domains/acme.test/mailboxes", data={"local_part": "a/../b", "csrf": token})
    assert bad.status_code == 422 and "invalid local part" in bad.text
    r = c.post("/domains/acme.test/aliases", data={"local_part": "sales", "targets": "bob@acme.test", "csrf": token})
    assert "Alias sales@acme.test saved." in r.text
    assert web.directory.alias_list() == [{"source": "sales@acme.test", "tenant": "acme", "targets": ["bob@acme.test"]}]
    r = c.get("/domains/acme.test")
    assert "not configured" in r.text or "DNS records" in r.text


def test_login_throttling(web: WebEnv) -> None:
    for _ in range(5):
        assert _login(web, "wrong password").status_code == 401
    r = _login(web)  # even the right password waits now
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
    assert "dovetail_session" not in r.headers.get("set-cookie", "")


def test_login_needs_its_form_token(web: WebEnv) -> None:
    r = web.client.post("/login", data={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "csrf": "forged"},
                        follow_redirects=False)
    assert r.status_code == 403 and "dovetail_session" not in r.headers.get("set-cookie", "")


def test_logout_ends_the_session_server_side(web: WebEnv) -> None:
    c = web.client
    _login(web)
    session = c.cookies.get("dovetail_session")
    token = _csrf(c.get("/").text)
    c.post("/logout", data={"csrf": token})
    c.cookies.set("dovetail_session", session)
    assert c.get("/", follow_redirects=False).status_code == 303


def test_message_viewer_is_sandboxed(web: WebEnv) -> None:
    c = web.client
    _login(web)
    html = (b"From: a@b.test\r\nTo: c@d.test\r\nSubject: pixel\r\nContent-Type: text/html\r\n\r\n"
            b"<p>Hello</p><img src='https://tracker.example/p.gif'><script>alert(1)</script>\r\n")
    qid = Queue(web.cfg.data_dir / "queue").inject(
        Envelope(sender="a@b.test", recipients=[QueueRecipient("c@d.test")]), html)
    page = c.get(f"/queue/{qid}")
    assert page.status_code == 200 and f'src="/queue/{qid}/body"' in page.text and 'sandbox=""' in page.text
    body = c.get(f"/queue/{qid}/body")
    csp = body.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "img-src data: cid:" in csp and "sandbox" in csp
    assert "https:" not in csp and "script-src" not in csp
    assert "<p>Hello</p>" in body.text
    assert c.get(f"/queue/{qid}/source").content == html
    assert c.get("/queue/NOTAQUEUEID0").status_code == 404
    assert "No sender-authentication verdict of ours." in page.text  # the MX did not see this one


def test_queued_message_shows_our_verdicts_as_badges(web: WebEnv) -> None:
    c = web.client
    _login(web)
    ours = web.cfg.hostname
    msg = (f"Authentication-Results: {ours};\r\n\tspf=pass smtp.mailfrom=a@b.test;\r\n"
           "\tdkim=policy (rsa-sha1) header.d=b.test header.s=s;\r\n"
           "\tdmarc=fail (p=reject dis=reject) header.from=b.test policy.dmarc=reject;\r\n\tarc=none\r\n"
           f"X-Original-Authentication-Results: {ours}; dmarc=pass header.from=bank.test\r\n"
           "From: a@b.test\r\nTo: c@d.test\r\nSubject: hi\r\n\r\nhello\r\n").encode()
    qid = Queue(web.cfg.data_dir / "queue").inject(
        Envelope(sender="a@b.test", recipients=[QueueRecipient("c@d.test")]), msg)
    page = c.get(f"/queue/{qid}").text
    found = re.findall(r'<span class="badge auth-(\w+)"[^>]*>(\w+ \w+)', page)
    assert found == [("pass", "SPF pass"), ("warn", "DKIM policy"), ("fail", "DMARC fail"), ("none", "ARC none")]


def test_dashboard_shows_chart_and_health(web: WebEnv) -> None:
    from dovetail.web import counters

    counters.record("received", 4)
    _login(web)
    page = web.client.get("/")
    assert page.status_code == 200
    assert '<svg class="chart"' in page.text and "received 4" in page.text
    assert "Services" in page.text and "smtpd" in page.text
    assert "Restarts" in page.text and "No master runs for this data directory" in page.text
    assert web.client.get("/ui/flow").status_code == 200


def test_tenant_page_sets_dmarc_enforcement(web: WebEnv) -> None:
    c = web.client
    _login(web)
    web.directory.tenant_add("acme")
    page = c.get("/tenants/acme").text
    assert re.search(r'<option value="inherit" selected>inherit \(mx.dmarc_enforce: on\)</option>', page)
    r = c.post("/tenants/acme/dmarc", data={"csrf": _csrf(page), "dmarc_enforce": "off"}, follow_redirects=False)
    assert r.status_code == 303 and web.directory.tenant_get("acme")["dmarc_enforce"] is False
    page = c.get("/tenants/acme").text
    assert '<option value="off" selected>off</option>' in page
    bad = c.post("/tenants/acme/dmarc", data={"csrf": _csrf(page), "dmarc_enforce": "maybe"})
    assert bad.status_code == 422 and web.directory.tenant_get("acme")["dmarc_enforce"] is False
    forged = c.post("/tenants/acme/dmarc", data={"csrf": "forged", "dmarc_enforce": "on"})
    assert forged.status_code == 403 and web.directory.tenant_get("acme")["dmarc_enforce"] is False
    c.post("/tenants/acme/dmarc", data={"csrf": _csrf(page), "dmarc_enforce": "inherit"})
    assert web.directory.tenant_get("acme")["dmarc_enforce"] is None
