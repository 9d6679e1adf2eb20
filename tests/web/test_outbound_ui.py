"""The outbound pages of the admin UI through HTTP: each form needs the CSRF token, does what the API
does, shows a refusal with its reason, and a tenant admin sees only its tenant."""

from __future__ import annotations

import re

import pytest

from dovetail.outbound.credentials import SmtpCredentials
from dovetail.outbound.keys import DkimKeys
from dovetail.outbound.limits import SendLimiter
from dovetail.outbound.transports import Transports
from dovetail.replies.sources.imap import ImapAccounts
from dovetail.web import auth

from .conftest import ADMIN_EMAIL, ADMIN_PASSWORD, WebEnv

TENANT_ADMIN = "ops@alpha.test"
TENANT_PASSWORD = "alpha ops password"


def _login(web: WebEnv, email: str = ADMIN_EMAIL, password: str = ADMIN_PASSWORD) -> None:
    c = web.client
    c.get("/login")
    r = c.post("/login", data={"email": email, "password": password, "next": "/",
                               "csrf": c.cookies.get("dovetail_login_csrf")}, follow_redirects=False)
    assert r.status_code == 303


def _csrf(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


@pytest.fixture
def ui(web_sqlite: WebEnv) -> WebEnv:
    d = web_sqlite.directory
    for t in ("alpha", "beta"):
        d.tenant_add(t)
        d.domain_add(f"{t}.test", t)
        d.mailbox_add(f"bob@{t}.test", None)
    auth.user_add(web_sqlite.engine, TENANT_ADMIN, TENANT_PASSWORD, role="tenant_admin", tenant="alpha")
    return web_sqlite


def test_pages_are_in_the_navigation_and_forms_need_csrf(ui: WebEnv) -> None:
    c = ui.client
    _login(ui)
    home = c.get("/")
    assert 'href="/transports"' in home.text
    for path in ("/transports", "/dkim", "/send-limits", "/smtp-credentials", "/reply-sources"):
        page = c.get(path)
        assert page.status_code == 200, path
        for other in ("/transports", "/dkim", "/send-limits", "/smtp-credentials", "/reply-sources"):
            assert f'href="{other}"' in page.text, (path, other)
    for path, data in (("/transports", {"rule": "domain", "match": "alpha.test"}),
                       ("/dkim/alpha.test/generate", {}), ("/send-limits/alpha", {"per_minute": "5"}),
                       ("/smtp-credentials", {"tenant": "alpha"}),
                       ("/reply-sources/inboxes", {"address": "bob@alpha.test"})):
        assert c.post(path, data=data, follow_redirects=False).status_code == 403, path
    assert Transports(ui.engine).list() == [] and DkimKeys(ui.engine, ui.cfg.data_dir / "dkim").list() == []
    assert SmtpCredentials(ui.engine).list() == []


def test_admin_forms_round_trip(ui: WebEnv) -> None:
    c = ui.client
    _login(ui)
    token = _csrf(c.get("/transports").text)
    r = c.post("/transports", data={"csrf": token, "rule": "domain", "match": "alpha.test",
                                    "relay": "[127.0.0.1]:2525", "tls": "none"})
    assert r.status_code == 200 and "domain alpha.test → relay:[127.0.0.1]:2525" in r.text
    bad = c.post("/transports", data={"csrf": token, "rule": "domain", "match": "beta.test",
                                      "relay": "nowhere.does-not-exist.invalid:25"})
    assert bad.status_code == 422 and "does not resolve" in bad.text
    assert [t.match for t in Transports(ui.engine).list()] == ["alpha.test"]
    resolved = c.get("/transports", params={"sender": "x@alpha.test", "recipient": "y@ext.example"})
    assert "relay:[127.0.0.1]:2525" in resolved.text and "domain alpha.test" in resolved.text
    r = c.post("/transports/domain/alpha.test/delete", data={"csrf": token})
    assert "Rule domain alpha.test removed." in r.text and Transports(ui.engine).list() == []
    r = c.post("/transports", data={"csrf": token, "rule": "default", "match": "*"})
    assert "default * → mx" in r.text and 'action="/transports/default/%2A/delete"' in r.text
    r = c.post("/transports/default/%2A/delete", data={"csrf": token})
    assert "Rule default * removed." in r.text and Transports(ui.engine).list() == []

    r = c.post("/dkim/alpha.test/generate", data={"csrf": token})
    assert "alpha.test: generated" in r.text
    keys = DkimKeys(ui.engine, ui.cfg.data_dir / "dkim").list("alpha.test")
    assert all(f"{k.selector}._domainkey.alpha.test" in r.text for k in keys)  # the records to publish
    assert "Rotate" in r.text

    r = c.post("/send-limits/alpha", data={"csrf": token, "per_minute": "20", "per_day": "500"})
    assert "alpha: 20 per minute, 500 recipients per day." in r.text
    bad = c.post("/send-limits/alpha", data={"csrf": token, "per_minute": "-3", "per_day": "500"})
    assert bad.status_code == 422 and "must not be negative" in bad.text
    assert SendLimiter(ui.engine).limits("alpha")[1].per_minute == 20

    r = c.post("/smtp-credentials", data={"csrf": token, "tenant": "beta", "description": "crm"})
    assert r.status_code == 201 and r.headers["cache-control"] == "no-store"
    secret = re.search(r'id="new-secret">([^<]+)<', r.text).group(1)
    username = re.search(r'id="new-username">([^<]+)<', r.text).group(1)
    import asyncio

    assert asyncio.run(SmtpCredentials(ui.engine).verify(username, secret)) == "beta"
    again = c.get("/smtp-credentials")
    assert username in again.text and secret not in again.text
    r = c.post(f"/smtp-credentials/{username}/revoke", data={"csrf": token})
    assert f"Credentials {username} revoked." in r.text and SmtpCredentials(ui.engine).list() == []

    r = c.post("/reply-sources/inboxes", data={"csrf": token, "address": "bob@beta.test"})
    assert "bob@beta.test is a reply inbox." in r.text
    r = c.post("/reply-sources/imap", data={"csrf": token, "tenant": "alpha", "name": "support",
                                            "host": "imap.example.net", "port": "993", "tls": "implicit",
                                            "username": "support", "password": "pw-imap-1", "folder": "INBOX"})
    assert "IMAP source support added (imap.example.net:993)." in r.text and "pw-imap-1" not in r.text
    bad = c.post("/reply-sources/imap", data={"csrf": token, "tenant": "alpha", "name": "support",
                                              "host": "imap.example.net", "username": "u", "password": "p"})
    assert bad.status_code == 409 and "already exists" in bad.text and 'value="p"' not in bad.text
    [source] = ImapAccounts(ui.engine).status()
    r = c.post(f"/reply-sources/imap/{source['id']}/delete", data={"csrf": token})
    assert "IMAP source" in r.text and ImapAccounts(ui.engine).status() == []
    r = c.post("/reply-sources/inboxes/bob@beta.test/delete", data={"csrf": token})
    assert "bob@beta.test is no longer a reply inbox." in r.text


def test_tenant_admin_sees_only_its_tenant(ui: WebEnv) -> None:
    Transports(ui.engine).set("domain", "beta.test", "mx")
    DkimKeys(ui.engine, ui.cfg.data_dir / "dkim").ensure("beta.test")
    SmtpCredentials(ui.engine).add("beta", "beta's app")
    c = ui.client
    _login(ui, TENANT_ADMIN, TENANT_PASSWORD)
    for path in ("/transports", "/dkim", "/send-limits", "/smtp-credentials", "/reply-sources"):
        page = c.get(path)
        assert page.status_code == 200 and "beta" not in page.text, path
    page = c.get("/send-limits")
    assert "alpha" in page.text and 'action="/send-limits/' not in page.text  # read-only for a tenant
    token = _csrf(page.text)
    assert c.post("/send-limits/alpha", data={"csrf": token, "per_minute": "9"}).status_code == 403
    assert c.post("/dkim/beta.test/rotate", data={"csrf": token}).status_code == 404
    assert c.post("/transports/domain/beta.test/delete", data={"csrf": token}).status_code == 404
    r = c.post("/transports", data={"csrf": token, "rule": "recipient", "match": "gmail.com"})
    assert r.status_code == 403
    r = c.post("/transports", data={"csrf": token, "rule": "domain", "match": "beta.test"})
    assert r.status_code == 404
    username = SmtpCredentials(ui.engine).list("beta")[0]["username"]
    assert c.post(f"/smtp-credentials/{username}/revoke", data={"csrf": token}).status_code == 404
    r = c.post("/smtp-credentials", data={"csrf": token, "tenant": "beta"})
    assert r.status_code == 404
    assert c.post("/reply-sources/inboxes", data={"csrf": token, "address": "bob@beta.test"}).status_code == 404
    # its own domain works
    r = c.post("/dkim/alpha.test/generate", data={"csrf": token})
    assert r.status_code == 200 and "alpha.test: generated" in r.text
    assert [t.kind for t in Transports(ui.engine).list()] == ["mx"]
    assert SendLimiter(ui.engine).limits("alpha")[1].per_minute == 0
    assert len(SmtpCredentials(ui.engine).list("beta")) == 1
