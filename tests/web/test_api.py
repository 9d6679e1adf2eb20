"""REST API against the real app and database on SQLite and PostgreSQL."""

from __future__ import annotations

import time

from dovetail.web import counters

from .conftest import WebEnv

PROBLEM = "application/problem+json"


def _seed(web: WebEnv) -> dict[str, str]:
    h = web.bearer(web.admin_token)
    r = web.client.post("/api/v1/tenants", json={"name": "acme", "display_name": "Acme"}, headers=h)
    assert r.status_code == 201
    r = web.client.post("/api/v1/domains", json={"name": "acme.test", "tenant": "acme"}, headers=h)
    assert r.status_code == 201, r.text
    return h


def test_directory_crud_and_problems(web: WebEnv) -> None:
    c, h = web.client, _seed(web)
    r = c.post("/api/v1/mailboxes", json={"address": "Bob@ACME.test", "password": "s3cret-pass", "quota": "1M"},
               headers=h)
    assert r.status_code == 201, r.text
    assert r.json()["address"] == "bob@acme.test" and r.json()["quota_bytes"] == 1024 * 1024
    assert web.directory.mailbox_get("bob@acme.test")["password_hash"].startswith("{ARGON2ID}")

    dup = c.post("/api/v1/mailboxes", json={"address": "bob@acme.test"}, headers=h)
    assert dup.status_code == 409 and dup.headers["content-type"] == PROBLEM
    assert dup.json()["status"] == 409 and "already exists" in dup.json()["detail"]

    bad = c.post("/api/v1/mailboxes", json={"address": "../etc@acme.test"}, headers=h)
    assert bad.status_code == 422 and bad.headers["content-type"] == PROBLEM
    assert web.directory.mailbox_list(domain="acme.test") == [
        {"address": "bob@acme.test", "tenant": "acme", "quota_bytes": 1048576, "enabled": True}]

    invalid = c.post("/api/v1/tenants", json={"name": 5}, headers=h)
    assert invalid.status_code == 422 and invalid.json()["errors"][0]["loc"] == ["body", "name"]

    r = c.post("/api/v1/aliases", json={"source": "sales@acme.test", "targets": ["bob@acme.test", "x@ext.test"]},
               headers=h)
    assert r.status_code == 201 and sorted(r.json()["targets"]) == ["bob@acme.test", "x@ext.test"]
    r = c.put("/api/v1/aliases/sales@acme.test", json={"targets": ["bob@acme.test"]}, headers=h)
    assert r.json()["targets"] == ["bob@acme.test"]

    r = c.put("/api/v1/domains/acme.test/catchall", json={"target": "bob@acme.test"}, headers=h)
    assert r.status_code == 200 and r.json()["catchall"] == "bob@acme.test"
    assert web.directory.domain_get("acme.test").catchall == "bob@acme.test"
    assert c.delete("/api/v1/domains/acme.test/catchall", headers=h).status_code == 204
    assert web.directory.domain_get("acme.test").catchall is None

    refused = c.delete("/api/v1/domains/acme.test", headers=h)
    assert refused.status_code == 409
    assert c.delete("/api/v1/domains/acme.test?force=true", headers=h).status_code == 204
    assert c.get("/api/v1/domains/acme.test", headers=h).status_code == 404
    assert web.directory.domain_list() == []


def test_dmarc_enforcement_of_tenant_and_domain(web: WebEnv) -> None:
    """PATCH sets on/off; null returns the setting to the level above (domain → tenant → mx.dmarc_enforce)."""
    c, h = web.client, _seed(web)
    assert c.get("/api/v1/tenants/acme", headers=h).json()["dmarc_enforce"] is None
    r = c.patch("/api/v1/tenants/acme", json={"dmarc_enforce": False}, headers=h)
    assert r.status_code == 200 and r.json()["dmarc_enforce"] is False
    dom = c.get("/api/v1/domains/acme.test", headers=h).json()
    assert (dom["dmarc_enforce"], dom["dmarc_enforce_by"]) == (None, "tenant")
    dom = c.patch("/api/v1/domains/acme.test", json={"dmarc_enforce": True}, headers=h).json()
    assert (dom["dmarc_enforce"], dom["dmarc_enforce_by"]) == (True, "domain")
    c.patch("/api/v1/tenants/acme", json={"display_name": "Acme Inc"}, headers=h)  # leaves the setting alone
    assert web.directory.tenant_get("acme")["dmarc_enforce"] is False
    dom = c.patch("/api/v1/domains/acme.test", json={"dmarc_enforce": None}, headers=h).json()
    assert dom["dmarc_enforce_by"] == "tenant"
    assert c.patch("/api/v1/tenants/acme", json={"dmarc_enforce": None}, headers=h).json()["dmarc_enforce"] is None
    assert c.get("/api/v1/domains/acme.test", headers=h).json()["dmarc_enforce_by"] == "global"
    bad = c.patch("/api/v1/tenants/acme", json={"dmarc_enforce": "sometimes"}, headers=h)
    assert bad.status_code == 422 and bad.headers["content-type"] == PROBLEM
    assert web.directory.tenant_get("acme")["dmarc_enforce"] is None  # nothing half-saved


def test_dns_section_lists_the_records_to_publish(web: WebEnv) -> None:
    h = _seed(web)
    dns = web.client.get("/api/v1/domains/acme.test/dns", headers=h).json()
    assert dns["configured"] is True
    by_type = {}
    for rec in dns["records"]:
        by_type.setdefault(rec["type"], []).append(rec)
    assert {"MX", "TXT"} <= set(by_type)
    assert any(r["value"].startswith("v=spf1") for r in by_type["TXT"])
    assert any(r["name"].startswith("_dmarc.acme.test") for r in by_type["TXT"])
    foreign = web.client.get("/api/v1/domains/example.org/dns", headers=h)
    assert foreign.status_code == 404 and foreign.headers["content-type"].startswith(PROBLEM)


def test_pagination_and_filter(web: WebEnv) -> None:
    c, h = web.client, _seed(web)
    for i in range(7):
        web.directory.mailbox_add(f"user{i}@acme.test", None)
    seen, cursor = [], None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = c.get("/api/v1/mailboxes", params=params, headers=h).json()
        seen += [m["address"] for m in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == sorted(f"user{i}@acme.test" for i in range(7))
    assert [m["address"] for m in c.get("/api/v1/mailboxes?q=user3", headers=h).json()["items"]] == ["user3@acme.test"]
    bad = c.get("/api/v1/mailboxes?cursor=%%%", headers=h)
    assert bad.status_code == 400 and bad.headers["content-type"] == PROBLEM


def test_usage_sums_maildir_sizes(web: WebEnv) -> None:
    c, h = web.client, _seed(web)
    web.directory.mailbox_add("bob@acme.test", None, quota_bytes=10_000)
    root = web.cfg.data_dir / "mail" / "acme" / "acme.test" / "bob"
    for sub in ("cur", "new", ".Sent/cur"):
        (root / sub).mkdir(parents=True)
    (root / "new" / "1.M1.host,S=1200").write_bytes(b"x" * 10)
    (root / "cur" / "2.M2.host,S=300:2,S").write_bytes(b"x")
    (root / ".Sent" / "cur" / "3.M3.host").write_bytes(b"y" * 55)  # no S=: measured
    r = c.get("/api/v1/mailboxes/bob@acme.test", headers=h).json()
    assert (r["usage_bytes"], r["messages"], r["quota_bytes"]) == (1555, 3, 10_000)


def test_auth_required_and_tokens(web: WebEnv) -> None:
    c, h = web.client, _seed(web)
    r = c.get("/api/v1/tenants")
    assert r.status_code == 401 and r.headers["content-type"] == PROBLEM and "Bearer" in r.headers["www-authenticate"]
    assert c.get("/api/v1/tenants", headers=web.bearer("dvt_nonsense")).status_code == 401
    made = c.post("/api/v1/tokens", json={"scope": "tenant", "tenant": "acme", "name": "crm"}, headers=h)
    assert made.status_code == 201
    tok = made.json()
    assert tok["token"].startswith(tok["prefix"]) and tok["tenant"] == "acme"
    th = web.bearer(tok["token"])
    assert [t["name"] for t in c.get("/api/v1/tenants", headers=th).json()["items"]] == ["acme"]
    listed = c.get("/api/v1/tokens", headers=h).json()["items"]
    assert all("token" not in t and "token_hash" not in t for t in listed)
    assert c.post("/api/v1/tokens", json={"scope": "admin"}, headers=th).status_code == 403
    assert c.delete(f"/api/v1/tokens/{tok['id']}", headers=h).status_code == 204
    assert c.get("/api/v1/tenants", headers=th).status_code == 401
    assert c.delete(f"/api/v1/tokens/{tok['id']}", headers=h).status_code == 409


def test_unknown_route_and_method_are_problems(web: WebEnv) -> None:
    h = web.bearer(web.admin_token)
    r = web.client.get("/api/v1/nothing-here", headers=h)
    assert r.status_code == 404 and r.headers["content-type"] == PROBLEM
    r = web.client.put("/api/v1/tenants", headers=h)
    assert r.status_code == 405 and r.json()["status"] == 405


def test_ids_beyond_a_database_integer_are_refused(web: WebEnv) -> None:
    h = web.bearer(web.admin_token)
    for path in ("/api/v1/tokens/95140205721609937354752", "/api/v1/tokens/0", f"/api/v1/tokens/{2**31}"):
        r = web.client.delete(path, headers=h)
        assert r.status_code == 422 and r.headers["content-type"] == PROBLEM, (path, r.text)
    assert web.client.delete(f"/api/v1/tokens/{2**31 - 1}", headers=h).status_code == 404


def test_counters_reach_stats_and_metrics(web: WebEnv) -> None:
    h = web.bearer(web.admin_token)
    now = time.time()
    counters.record("received", 3, at=now)
    counters.record("delivered", 2, at=now)
    counters.record("received", 1, at=now - 120)
    stats = web.client.get("/api/v1/stats?minutes=5", headers=h).json()
    assert stats["series"]["received"][-1] >= 3 and stats["series"]["received"][-3] >= 1
    assert stats["series"]["delivered"][-1] >= 2
    assert set(stats["queue"]) == {"incoming", "active", "deferred", "hold", "corrupt"}
    assert web.client.get("/metrics").status_code == 401  # the test client's address is not a trusted network
    text = web.client.get("/metrics", headers=h).text
    assert "# TYPE dovetail_mail_events_total counter" in text
    assert 'dovetail_directory_objects{kind="tenant"}' in text
    # the MX's sender-authentication verdicts, once flushed, are counted per method and result
    counters.record("dmarc_reject", 2, at=now)
    counters.record("spf_pass", 5, at=now)
    counters.record("arc_pass", 1, at=now)
    counters.record("dmarc_override", 1, at=now)
    counters.flush(web.engine)  # type: ignore[arg-type]
    text = web.client.get("/metrics", headers=h).text
    assert 'dovetail_auth_results_total{method="dmarc",result="reject"} 2' in text
    assert 'dovetail_auth_results_total{method="spf",result="pass"} 5' in text
    assert 'dovetail_auth_results_total{method="dkim",result="fail"} 0' in text
    assert 'dovetail_auth_results_total{method="arc",result="pass"} 1' in text
    assert 'dovetail_auth_results_total{method="arc",result="fail"} 0' in text
    assert 'dovetail_auth_results_total{method="dmarc",result="override"} 1' in text


def test_queue_routes(web: WebEnv) -> None:
    from dovetail.queue import Envelope, Queue, QueueRecipient

    c, h = web.client, web.bearer(web.admin_token)
    queue = Queue(web.cfg.data_dir / "queue")
    msg = b"From: a@b.test\r\nTo: c@d.test\r\nSubject: hi\r\n\r\nbody\r\n"
    qid = queue.inject(Envelope(sender="a@b.test", recipients=[QueueRecipient("c@d.test")]), msg)
    items = c.get("/api/v1/queue", headers=h).json()["items"]
    assert [i["queue_id"] for i in items] == [qid]
    shown = c.get(f"/api/v1/queue/{qid}", headers=h).json()
    assert ["Subject", "hi"] in shown["headers"]
    assert c.get(f"/api/v1/queue/{qid}/raw", headers=h).content == msg
    assert c.post(f"/api/v1/queue/{qid}/hold", headers=h).json() == {"affected": 1}
    assert queue.locate(qid) == "hold"
    assert c.get("/api/v1/queue?state=hold", headers=h).json()["items"][0]["state"] == "hold"
    assert c.post(f"/api/v1/queue/{qid}/release", headers=h).json() == {"affected": 1}
    assert queue.locate(qid) == "incoming"
    assert c.delete(f"/api/v1/queue/{qid}", headers=h).json() == {"affected": 1}
    assert queue.locate(qid) is None
    assert c.get(f"/api/v1/queue/{qid}", headers=h).status_code == 404
    assert c.get("/api/v1/queue/not-a-qid", headers=h).status_code == 404
