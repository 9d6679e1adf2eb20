"""The outbound verbs over the REST API: transports, DKIM keys, send limits, SMTP credentials, reply
inboxes and IMAP sources; round trips as admin and as a tenant, refusals across the tenant wall, and
bad input refused with problem details and nothing saved."""

from __future__ import annotations

import os

import pytest

from dovetail.outbound.credentials import SmtpCredentials
from dovetail.outbound.keys import DkimKeys
from dovetail.outbound.limits import SendLimiter
from dovetail.outbound.transports import Transports
from dovetail.replies.sources.imap import PASSWORD_PURPOSE, ImapAccounts
from dovetail.sealing import Sealer
from dovetail.web import auth

from .conftest import WebEnv

API = "/api/v1"


@pytest.fixture
def tenants(web_sqlite: WebEnv) -> tuple[WebEnv, str, str]:
    d = web_sqlite.directory
    for t in ("alpha", "beta"):
        d.tenant_add(t)
        d.domain_add(f"{t}.test", t)
        d.mailbox_add(f"bob@{t}.test", None)
    alpha = auth.token_add(web_sqlite.engine, "tenant", "alpha").token
    beta = auth.token_add(web_sqlite.engine, "tenant", "beta").token
    return web_sqlite, alpha, beta


def _problem(r, status: int) -> str:  # noqa: ANN001
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    return r.json().get("detail", "")


def test_transport_round_trip_and_resolve(web: WebEnv) -> None:
    """Set, list, resolve and delete rules as an admin, on both database engines."""
    web.directory.tenant_add("acme")
    web.directory.domain_add("acme.test", "acme")
    c, h = web.client, web.bearer(web.admin_token)
    r = c.put(f"{API}/transports/domain/acme.test", headers=h,
              json={"relay": "[127.0.0.1]:2525", "tls": "none", "username": "u", "secret": "s3cret"})
    assert r.status_code == 200, r.text
    assert r.json() | {} == {**r.json(), "transport": "relay:[127.0.0.1]:2525", "secret_set": True, "kind": "relay"}
    assert "s3cret" not in r.text
    assert c.put(f"{API}/transports/recipient/.partner.example", headers=h, json={}).status_code == 200
    listed = c.get(f"{API}/transports", headers=h).json()["items"]
    assert [(t["scope"], t["match"], t["transport"]) for t in listed] == [
        ("recipient", ".partner.example", "mx"), ("domain", "acme.test", "relay:[127.0.0.1]:2525")]
    # the secret went in sealed, and opens with the data directory's key (as the relay agent reads it)
    stored = Transports(web.engine, sealer=Sealer.for_data_dir(web.cfg.data_dir)).list()
    assert [t.secret for t in stored if t.scope == "domain"] == ["s3cret"]

    route = c.get(f"{API}/transports/resolve", headers=h,
                  params={"sender": "news@acme.test", "recipient": "x@mail.partner.example"}).json()
    assert (route["transport"], route["rule"]["scope"], route["tenant"]) == ("mx", "recipient", "acme")
    route = c.get(f"{API}/transports/resolve", headers=h,
                  params={"sender": "news@acme.test", "recipient": "x@other.example"}).json()
    assert (route["transport"], route["rule"]["match"]) == ("relay:[127.0.0.1]:2525", "acme.test")
    route = c.get(f"{API}/transports/resolve", headers=h, params={"sender": "<>", "recipient": "x@acme.test"})
    assert route.json()["transport"] == "virtual"
    _problem(c.get(f"{API}/transports/resolve", headers=h, params={"sender": "", "recipient": "no-at-sign"}), 422)

    assert c.delete(f"{API}/transports/domain/acme.test", headers=h).status_code == 204
    assert "no transport rule" in _problem(c.delete(f"{API}/transports/domain/acme.test", headers=h), 404)
    assert [t.scope for t in Transports(web.engine).list()] == ["recipient"]


def test_transport_bad_input_saves_nothing(tenants: tuple[WebEnv, str, str]) -> None:
    web, _, _ = tenants
    c, h = web.client, web.bearer(web.admin_token)
    # a relay whose name does not resolve: refused, as `transport set` refuses it, unless told not to check
    detail = _problem(c.put(f"{API}/transports/domain/alpha.test", headers=h,
                            json={"relay": "relay.does-not-exist.invalid:587"}), 422)
    assert "does not resolve" in detail
    assert Transports(web.engine).list() == []
    r = c.put(f"{API}/transports/domain/alpha.test", headers=h,
              json={"relay": "relay.does-not-exist.invalid:587", "dns_check": False})
    assert r.status_code == 200 and r.json()["host"] == "relay.does-not-exist.invalid"
    assert "not one of ours" in _problem(c.put(f"{API}/transports/domain/foreign.example", headers=h, json={}),
                                         422)
    _problem(c.put(f"{API}/transports/recipient/alpha.test", headers=h, json={}), 422)  # ours: delivered here
    _problem(c.put(f"{API}/transports/domain/alpha.test", headers=h, json={"relay": "[1.2.3.4]:99999"}), 422)
    _problem(c.put(f"{API}/transports/domain/alpha.test", headers=h,
                   json={"relay": "[127.0.0.1]:25", "username": "only-user"}), 422)
    _problem(c.put(f"{API}/transports/default/alpha.test", headers=h, json={}), 422)
    _problem(c.put(f"{API}/transports/bogus/alpha.test", headers=h, json={}), 422)
    assert "no tenant" in _problem(c.put(f"{API}/transports/tenant/nobody", headers=h, json={}), 404)
    assert [t.host for t in Transports(web.engine).list()] == ["relay.does-not-exist.invalid"]


def test_transports_behind_the_tenant_wall(tenants: tuple[WebEnv, str, str]) -> None:
    web, alpha, beta = tenants
    c, admin, ha = web.client, web.bearer(web.admin_token), web.bearer(alpha)
    assert c.put(f"{API}/transports/domain/beta.test", headers=web.bearer(beta), json={}).status_code == 200
    assert c.put(f"{API}/transports/default/*", headers=admin, json={}).status_code == 200
    # alpha sets its own rules, sees only them, and cannot touch beta's nor the ones of everyone
    assert c.put(f"{API}/transports/sender/@alpha.test", headers=ha, json={}).json()["scope"] == "domain"
    assert c.put(f"{API}/transports/tenant/alpha", headers=ha, json={}).status_code == 200
    assert [(t["scope"], t["match"]) for t in c.get(f"{API}/transports", headers=ha).json()["items"]] == [
        ("domain", "alpha.test"), ("tenant", "alpha")]
    _problem(c.put(f"{API}/transports/domain/beta.test", headers=ha, json={"relay": "[127.0.0.9]:25"}), 404)
    _problem(c.delete(f"{API}/transports/domain/beta.test", headers=ha), 404)
    _problem(c.put(f"{API}/transports/tenant/beta", headers=ha, json={}), 404)
    _problem(c.put(f"{API}/transports/recipient/gmail.com", headers=ha, json={}), 403)
    _problem(c.delete(f"{API}/transports/default/*", headers=ha), 403)
    _problem(c.get(f"{API}/transports/resolve", headers=ha,
                   params={"sender": "x@beta.test", "recipient": "y@ext.example"}), 404)
    _problem(c.get(f"{API}/transports/resolve", headers=ha,
                   params={"sender": "x@alpha.test", "recipient": "y@ext.example", "tenant": "beta"}), 404)
    mine = c.get(f"{API}/transports/resolve", headers=ha, params={"sender": "x@alpha.test",
                                                                   "recipient": "y@ext.example"}).json()
    assert mine["rule"] == {"scope": "domain", "match": "alpha.test", "kind": mine["rule"]["kind"]}
    table = {(t.scope, t.match): t for t in Transports(web.engine).list()}
    assert table[("domain", "beta.test")].kind == "mx" and len(table) == 4


def test_dkim_keys_rotate_activate_retire(tenants: tuple[WebEnv, str, str]) -> None:
    web, alpha, _ = tenants
    c, h = web.client, web.bearer(alpha)
    made = c.post(f"{API}/domains/alpha.test/dkim/generate", headers=h).json()
    assert [k["state"] for k in made["changed"]] == ["active", "active"]
    assert {k["algorithm"] for k in made["keys"]} == {"rsa-sha256", "ed25519-sha256"}
    first = {k["selector"] for k in made["keys"]}
    assert c.post(f"{API}/domains/alpha.test/dkim/generate", headers=h).json()["changed"] == []
    # activating with nothing published is a conflict that changes nothing
    assert "no published keys" in _problem(c.post(f"{API}/domains/alpha.test/dkim/activate", headers=h), 409)

    rotated = c.post(f"{API}/domains/alpha.test/dkim/rotate", headers=h).json()
    new = {k["selector"] for k in rotated["changed"]}
    assert {k["state"] for k in rotated["changed"]} == {"published"} and not new & first
    for k in rotated["changed"]:
        assert k["record"] == f"{k['selector']}._domainkey.alpha.test" and k["txt"].startswith("v=DKIM1; k=")
    _problem(c.post(f"{API}/domains/alpha.test/dkim/rotate", headers=h), 409)  # one rotation at a time
    # the new selectors are among the DNS records to publish
    dns = c.get(f"{API}/domains/alpha.test/dns", headers=h).json()["records"]
    assert {f"{s}._domainkey.alpha.test" for s in new} <= {r["name"] for r in dns}

    c.post(f"{API}/domains/alpha.test/dkim/activate", headers=h)
    states = {k["selector"]: k["state"] for k in c.get(f"{API}/domains/alpha.test/dkim", headers=h).json()["items"]}
    assert states == {**dict.fromkeys(first, "retiring"), **dict.fromkeys(new, "active")}
    gone = c.post(f"{API}/domains/alpha.test/dkim/retire", headers=h).json()["changed"]
    assert {k["selector"] for k in gone} == first
    store = DkimKeys(web.engine, web.cfg.data_dir / "dkim")
    assert {k.selector for k in store.list("alpha.test")} == new
    assert not any((web.cfg.data_dir / "dkim" / "alpha.test" / f"{s}.key").exists() for s in first)
    one = sorted(new)[0]
    assert c.get(f"{API}/domains/alpha.test/dkim/{one}", headers=h).json()["state"] == "active"
    assert "no DKIM selector" in _problem(c.get(f"{API}/domains/alpha.test/dkim/nosuch", headers=h), 404)


def test_dkim_list_shows_an_unreadable_active_key(tenants: tuple[WebEnv, str, str]) -> None:
    web, _, _ = tenants
    c, h = web.client, web.bearer(web.admin_token)
    keys = c.post(f"{API}/domains/alpha.test/dkim/generate", headers=h).json()["keys"]
    broken = keys[0]["selector"]
    (web.cfg.data_dir / "dkim" / "alpha.test" / f"{broken}.key").write_bytes(b"not a key\n")
    listed = {k["selector"]: k for k in c.get(f"{API}/dkim", headers=h).json()["items"]}
    assert listed[broken]["status"].startswith("active (unreadable: ")
    # run as root, pytest's folder is one the service user cannot enter: then every key says so
    assert "not a usable private key" in listed[broken]["problem"] or "cannot enter" in listed[broken]["problem"]
    # the same statuses as `dovetail dkim list` shows
    cli = DkimKeys.for_service(web.engine, web.cfg.data_dir / "dkim", web.cfg["server.user"])
    assert {k.selector: k.status for k in cli.list(check=True)} == {s: k["status"] for s, k in listed.items()}
    if os.geteuid() != 0:
        assert listed[keys[1]["selector"]]["status"] == "active"


def test_dkim_behind_the_tenant_wall(tenants: tuple[WebEnv, str, str]) -> None:
    web, alpha, beta = tenants
    c, ha = web.client, web.bearer(alpha)
    beta_keys = c.post(f"{API}/domains/beta.test/dkim/generate", headers=web.bearer(beta)).json()["keys"]
    c.post(f"{API}/domains/alpha.test/dkim/generate", headers=ha)
    for action in ("generate", "rotate", "activate", "retire"):
        _problem(c.post(f"{API}/domains/beta.test/dkim/{action}", headers=ha), 404)
    _problem(c.get(f"{API}/domains/beta.test/dkim", headers=ha), 404)
    _problem(c.get(f"{API}/domains/beta.test/dkim/{beta_keys[0]['selector']}", headers=ha), 404)
    _problem(c.get(f"{API}/dkim", headers=ha, params={"domain": "beta.test"}), 404)
    assert {k["domain"] for k in c.get(f"{API}/dkim", headers=ha).json()["items"]} == {"alpha.test"}
    assert {k["domain"] for k in c.get(f"{API}/dkim", headers=web.bearer(web.admin_token)).json()["items"]} == {
        "alpha.test", "beta.test"}
    assert [k.state for k in DkimKeys(web.engine, web.cfg.data_dir / "dkim").list("beta.test")] == ["active"] * 2


def test_send_limits(tenants: tuple[WebEnv, str, str]) -> None:
    web, alpha, _ = tenants
    c, admin, ha = web.client, web.bearer(web.admin_token), web.bearer(alpha)
    r = c.put(f"{API}/tenants/alpha/send-limits", headers=admin, json={"per_minute": 30, "per_day": 1000})
    assert r.json() == {"tenant": "alpha", "per_minute": 30, "per_day": 1000, "sent_today": 0}
    assert SendLimiter(web.engine).limits("alpha")[1].per_day == 1000
    r = c.put(f"{API}/tenants/alpha/send-limits", headers=admin, json={"per_minute": -1, "per_day": 5})
    _problem(r, 422)
    assert r.json()["errors"][0]["loc"] == ["body", "per_minute"]
    assert "greater than or equal to 0" in r.json()["errors"][0]["msg"]
    assert SendLimiter(web.engine).limits("alpha")[1].per_minute == 30
    # a tenant reads its limits, cannot change them, and does not see another tenant's
    assert c.get(f"{API}/tenants/alpha/send-limits", headers=ha).json()["per_minute"] == 30
    _problem(c.put(f"{API}/tenants/alpha/send-limits", headers=ha, json={"per_minute": 0, "per_day": 0}), 403)
    _problem(c.get(f"{API}/tenants/beta/send-limits", headers=ha), 404)
    _problem(c.put(f"{API}/tenants/beta/send-limits", headers=ha, json={"per_minute": 1}), 404)
    _problem(c.get(f"{API}/tenants/nobody/send-limits", headers=admin), 404)
    assert SendLimiter(web.engine).limits("alpha")[1].per_minute == 30


def test_smtp_credentials(tenants: tuple[WebEnv, str, str]) -> None:
    web, alpha, beta = tenants
    c, ha = web.client, web.bearer(alpha)
    made = c.post(f"{API}/smtp-credentials", headers=ha, json={"description": "crm"})
    assert made.status_code == 201 and made.headers["cache-control"] == "no-store"
    cred = made.json()
    assert cred["tenant"] == "alpha" and cred["username"].startswith("alpha-") and len(cred["secret"]) >= 24
    import asyncio

    assert asyncio.run(SmtpCredentials(web.engine).verify(cred["username"], cred["secret"])) == "alpha"
    listed = c.get(f"{API}/smtp-credentials", headers=ha).json()["items"]
    assert [(r["username"], r["description"]) for r in listed] == [(cred["username"], "crm")]
    assert "secret" not in listed[0]
    theirs = c.post(f"{API}/smtp-credentials", headers=web.bearer(beta), json={}).json()["username"]
    # across the wall: cannot create for, list, or revoke another tenant's
    _problem(c.post(f"{API}/smtp-credentials", headers=ha, json={"tenant": "beta"}), 404)
    assert c.get(f"{API}/smtp-credentials", headers=ha, params={"tenant": "beta"}).json()["items"] == []
    _problem(c.delete(f"{API}/smtp-credentials/{theirs}", headers=ha), 404)
    assert {r["tenant"] for r in SmtpCredentials(web.engine).list()} == {"alpha", "beta"}
    _problem(c.post(f"{API}/smtp-credentials", headers=web.bearer(web.admin_token), json={}), 422)
    assert c.delete(f"{API}/smtp-credentials/{cred['username']}", headers=ha).status_code == 204
    assert asyncio.run(SmtpCredentials(web.engine).verify(cred["username"], cred["secret"])) is None
    _problem(c.delete(f"{API}/smtp-credentials/{cred['username']}", headers=ha), 404)


def test_reply_inboxes(tenants: tuple[WebEnv, str, str]) -> None:
    web, alpha, beta = tenants
    c, ha, admin = web.client, web.bearer(alpha), web.bearer(web.admin_token)
    r = c.post(f"{API}/reply-inboxes", headers=ha, json={"address": "BOB@alpha.test"})
    assert r.status_code == 201 and r.json() == {"tenant": "alpha", "address": "bob@alpha.test"}
    assert c.post(f"{API}/reply-inboxes", headers=admin, json={"address": "bob@beta.test"}).json()["tenant"] == "beta"
    assert c.get(f"{API}/reply-inboxes", headers=ha).json()["items"] == [{"tenant": "alpha",
                                                                          "address": "bob@alpha.test"}]
    assert len(c.get(f"{API}/reply-inboxes", headers=admin).json()["items"]) == 2
    _problem(c.post(f"{API}/reply-inboxes", headers=ha, json={"address": "bob@beta.test"}), 404)
    _problem(c.post(f"{API}/reply-inboxes", headers=ha, json={"address": "nobody@alpha.test"}), 404)
    _problem(c.delete(f"{API}/reply-inboxes/bob@beta.test", headers=ha), 404)
    assert c.delete(f"{API}/reply-inboxes/bob@alpha.test", headers=ha).status_code == 204
    assert c.get(f"{API}/reply-inboxes", headers=admin).json()["items"] == [{"tenant": "beta",
                                                                             "address": "bob@beta.test"}]
    assert c.delete(f"{API}/reply-inboxes/bob@beta.test", headers=web.bearer(beta)).status_code == 204


def test_imap_sources(tenants: tuple[WebEnv, str, str]) -> None:
    web, alpha, beta = tenants
    c, ha = web.client, web.bearer(alpha)
    body = {"name": "support", "host": "imap.example.net", "username": "support@example.net",
            "password": "pw-123456", "folder": "INBOX"}
    r = c.post(f"{API}/imap-sources", headers=ha, json=body)
    assert r.status_code == 201, r.text
    made = r.json()
    assert made | {"id": 0} == {**made, "tenant": "alpha", "port": 993, "tls": "implicit", "enabled": True,
                                "last_error": None, "last_uid": None, "synced_at": None, "id": 0}
    assert "pw-123456" not in r.text
    # the password is stored sealed, and the engine opens it with the data directory's key
    with web.engine.connect() as conn:
        import sqlalchemy as sa

        from dovetail.replies.schema import imap_accounts
        stored = conn.execute(sa.select(imap_accounts.c.password)).scalar_one()
    assert stored != "pw-123456"
    assert Sealer.for_data_dir(web.cfg.data_dir).open(stored, PASSWORD_PURPOSE) == "pw-123456"
    accounts = ImapAccounts(web.engine, Sealer.for_data_dir(web.cfg.data_dir))
    assert [a.password for a in accounts.list("alpha")] == ["pw-123456"]

    assert "already exists" in _problem(c.post(f"{API}/imap-sources", headers=ha, json=body), 409)
    _problem(c.post(f"{API}/imap-sources", headers=ha, json={**body, "name": "x", "port": 0}), 422)
    _problem(c.post(f"{API}/imap-sources", headers=ha, json={**body, "name": "x", "host": "bad host"}), 422)
    _problem(c.post(f"{API}/imap-sources", headers=ha, json={**body, "tenant": "beta"}), 404)
    accounts.save_checkpoint(made["id"], "INBOX", 7, 42)
    accounts.set_error(made["id"], "login failed")
    status = c.get(f"{API}/imap-sources/{made['id']}", headers=ha).json()
    assert (status["last_uid"], status["last_error"]) == (42, "login failed") and status["synced_at"]
    # beta does not see it, and cannot remove it
    hb = web.bearer(beta)
    assert c.get(f"{API}/imap-sources", headers=hb).json()["items"] == []
    _problem(c.get(f"{API}/imap-sources/{made['id']}", headers=hb), 404)
    _problem(c.delete(f"{API}/imap-sources/{made['id']}", headers=hb), 404)
    assert len(c.get(f"{API}/imap-sources", headers=web.bearer(web.admin_token)).json()["items"]) == 1
    assert c.delete(f"{API}/imap-sources/{made['id']}", headers=ha).status_code == 204
    assert accounts.list() == [] and accounts.checkpoint(made["id"], "INBOX") is None


@pytest.mark.skipif(os.geteuid() != 0, reason="the key files' owner is only chosen when root writes them")
def test_keys_made_through_the_api_belong_to_the_service_user(tenants: tuple[WebEnv, str, str]) -> None:
    from dovetail.privileges import lookup_user

    web, alpha, _ = tenants
    owner = lookup_user(web.cfg["server.user"])
    if owner is None:
        pytest.skip("no service user on this machine")
    keys = web.client.post(f"{API}/domains/alpha.test/dkim/generate", headers=web.bearer(alpha)).json()["keys"]
    st = (web.cfg.data_dir / "dkim" / "alpha.test" / f"{keys[0]['selector']}.key").stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (*owner, 0o600)
