"""Tenants are walls: a tenant token gets 404/403 on every other tenant's object, on every route."""

from __future__ import annotations

import re

import pytest

from dovetail.queue import Envelope, Queue, QueueRecipient
from dovetail.web import auth

from .conftest import WebEnv

BODIES = {
    ("PATCH", "/api/v1/tenants/{tenant}"): {"enabled": False},
    ("PATCH", "/api/v1/domains/{domain}"): {"enabled": False},
    ("PUT", "/api/v1/domains/{domain}/catchall"): {"target": "x@alpha.test"},
    ("PATCH", "/api/v1/mailboxes/{address}"): {"enabled": False},
    ("PUT", "/api/v1/aliases/{source}"): {"targets": ["x@alpha.test"]},
    ("POST", "/api/v1/campaigns/{campaign_id}/messages"): {"message_id": "<evil@alpha.test>",
                                                           "recipient": "x@ext.test"},
    ("PUT", "/api/v1/transports/{rule}/{match}"): {"relay": "[127.0.0.9]:25"},
    ("PUT", "/api/v1/tenants/{tenant}/send-limits"): {"per_minute": 1, "per_day": 1},
}


@pytest.fixture
def two_tenants(web_sqlite: WebEnv) -> tuple[WebEnv, str, dict[str, str]]:
    d = web_sqlite.directory
    for t in ("alpha", "beta"):
        d.tenant_add(t)
        d.domain_add(f"{t}.test", t)
        d.mailbox_add(f"bob@{t}.test", None)
        d.alias_add(f"sales@{t}.test", [f"bob@{t}.test"])
    alpha = auth.token_add(web_sqlite.engine, "tenant", "alpha").token
    beta_token = auth.token_add(web_sqlite.engine, "tenant", "beta")
    qid = Queue(web_sqlite.cfg.data_dir / "queue").inject(
        Envelope(sender="bob@beta.test", recipients=[QueueRecipient("x@ext.test")]), b"Subject: s\r\n\r\nx\r\n")
    values = {"tenant": "beta", "domain": "beta.test", "address": "bob@beta.test", "source": "sales@beta.test",
              "token_id": str(beta_token.id), "qid": qid, **_beta_replies(web_sqlite),
              **_beta_outbound(web_sqlite)}
    return web_sqlite, alpha, values


def _beta_replies(web: WebEnv) -> dict[str, str]:
    """Beta's campaign, thread, reply, webhook endpoint and delivery, made through the replies engine."""
    from dovetail.replies.pipeline import Source
    from dovetail.replies.service import RepliesService

    svc = RepliesService.open(web.engine, web.cfg.data_dir)
    campaign = svc.registry.create_campaign("beta", "spring")
    svc.registry.register_outbound("beta", campaign.id, message_id="<out-1@beta.test>", recipient="carl@ext.test")
    endpoint = svc.outbox.add_endpoint("beta", "https://hooks.example/beta")
    reply = svc.process_message(b"From: carl@ext.test\r\nTo: bob@beta.test\r\nSubject: Re: hi\r\n"
                                b"Message-ID: <r1@ext.test>\r\nIn-Reply-To: <out-1@beta.test>\r\n\r\nYes!\r\n",
                                Source("beta", "test"))
    delivery = svc.outbox.deliveries("beta")[0]
    return {"campaign_id": str(campaign.id), "thread_id": str(reply.thread_id), "reply_id": str(reply.id),
            "endpoint_id": str(endpoint["id"]), "delivery_id": str(delivery["id"])}


def _beta_outbound(web: WebEnv) -> dict[str, str]:
    """Beta's transport rule, DKIM key, SMTP credential, reply inbox and IMAP source."""
    from dovetail.outbound.credentials import SmtpCredentials
    from dovetail.outbound.keys import DkimKeys
    from dovetail.outbound.transports import Transports
    from dovetail.replies.service import RepliesService
    from dovetail.replies.sources.imap import ImapAccounts
    from dovetail.replies.sources.local import LocalHook

    Transports(web.engine).set("domain", "beta.test", "mx")
    key = DkimKeys(web.engine, web.cfg.data_dir / "dkim").ensure("beta.test")[0]
    svc = RepliesService.open(web.engine, web.cfg.data_dir)
    LocalHook(svc).mark("beta", "bob@beta.test")
    source = ImapAccounts(web.engine, svc.sealer).add("beta", "support", host="imap.example.net", username="u",
                                                      password="p")
    return {"rule": "domain", "match": "beta.test", "selector": key.selector, "action": "rotate",
            "username": SmtpCredentials(web.engine).add("beta").username, "source_id": str(source.id)}


def _outbound_snapshot(web: WebEnv) -> tuple:
    from dovetail.outbound.credentials import SmtpCredentials
    from dovetail.outbound.keys import DkimKeys
    from dovetail.outbound.transports import Transports
    from dovetail.replies.service import RepliesService
    from dovetail.replies.sources.imap import ImapAccounts
    from dovetail.replies.sources.local import LocalHook

    return (Transports(web.engine, check_interval=0).list(), DkimKeys(web.engine, web.cfg.data_dir / "dkim").list(),
            SmtpCredentials(web.engine).list(), LocalHook(RepliesService.open(web.engine, web.cfg.data_dir)).listing(),
            ImapAccounts(web.engine).status())


def _snapshot(web: WebEnv) -> tuple:
    d = web.directory
    return (d.tenant_list(), d.domain_list("beta"), d.mailbox_list(tenant="beta"), d.alias_list(tenant="beta"),
            [{k: v for k, v in t.items() if k != "last_used_at"} for t in auth.token_list(web.engine)],
            Queue(web.cfg.data_dir / "queue").list_messages(), _outbound_snapshot(web))


def test_every_id_route_hides_other_tenants_objects(two_tenants: tuple[WebEnv, str, dict[str, str]]) -> None:
    web, alpha, values = two_tenants
    before = _snapshot(web)
    h = web.bearer(alpha)
    checked, unknown = [], []
    paths = web.client.get("/api/v1/openapi.json").json()["paths"]
    for path, operations in paths.items():
        params = re.findall(r"{(\w+)}", path)
        if not params:
            continue
        if any(p not in values for p in params):
            unknown.append(path)
            continue
        url = path
        for p in params:
            url = url.replace("{" + p + "}", values[p])
        for method in operations:
            method = method.upper()
            r = web.client.request(method, url, headers=h, json=BODIES.get((method, path)))
            assert r.status_code in (403, 404), f"{method} {url} -> {r.status_code} {r.text}"
            assert r.headers["content-type"] == "application/problem+json"
            checked.append(f"{method} {path}")
    assert len(checked) >= 23, checked
    assert not unknown, f"routes with ids this matrix does not know: {unknown}"
    assert _snapshot(web) == before
    # the same routes work for alpha's own objects (the wall is not a blanket refusal)
    assert web.client.get("/api/v1/domains/alpha.test", headers=h).status_code == 200
    assert web.client.get("/api/v1/mailboxes/bob@alpha.test", headers=h).status_code == 200


def test_creates_and_lists_stay_inside_the_tenant(two_tenants: tuple[WebEnv, str, dict[str, str]]) -> None:
    web, alpha, _ = two_tenants
    c, h = web.client, web.bearer(alpha)
    before = _snapshot(web)
    assert c.post("/api/v1/domains", json={"name": "new.test", "tenant": "beta"}, headers=h).status_code == 404
    assert c.post("/api/v1/mailboxes", json={"address": "evil@beta.test"}, headers=h).status_code == 404
    assert c.post("/api/v1/aliases", json={"source": "evil@beta.test", "targets": ["a@alpha.test"]},
                  headers=h).status_code == 404
    assert c.post("/api/v1/tokens", json={"scope": "tenant", "tenant": "beta"}, headers=h).status_code == 404
    assert c.post("/api/v1/tenants", json={"name": "gamma"}, headers=h).status_code == 403
    assert _snapshot(web) == before
    for path in ("/api/v1/tenants", "/api/v1/domains", "/api/v1/mailboxes", "/api/v1/aliases",
                 "/api/v1/domains?tenant=beta", "/api/v1/mailboxes?domain=beta.test", "/api/v1/tokens"):
        items = c.get(path, headers=h).json()["items"]
        assert "beta" not in repr(items), path
    assert c.get("/api/v1/tenants", headers=h).json()["items"][0]["name"] == "alpha"
    assert c.get("/api/v1/queue", headers=h).status_code == 403
    assert c.get("/api/v1/stats", headers=h).status_code == 403
    assert c.get("/metrics", headers=h).status_code == 403
    made = c.post("/api/v1/domains", json={"name": "more.alpha.test"}, headers=h)
    assert made.status_code == 201 and made.json()["tenant"] == "alpha"
