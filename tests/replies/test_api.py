"""The replies REST routes inside the real web app, with real API tokens, on both databases."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from dovetail import config
from dovetail.db import make_engine, migrate
from dovetail.directory import Directory
from dovetail.replies.pipeline import Source
from dovetail.replies.service import RepliesService
from dovetail.web import auth
from dovetail.web.app import create_app

from .mails import reply


@pytest.fixture
def api(data_dir: Path) -> Iterator[tuple[TestClient, dict[str, dict[str, str]], RepliesService]]:
    cfg = config.load(data_dir)
    engine = make_engine(cfg.database_url)
    migrate(engine)
    Directory(engine).tenant_add("acme")
    Directory(engine).tenant_add("other")
    app = create_app(cfg, engine, flush_interval=3600)
    heads = {name: {"Authorization": f"Bearer {tok.token}"} for name, tok in (
        ("admin", auth.token_add(engine, "admin")), ("acme", auth.token_add(engine, "tenant", "acme")),
        ("other", auth.token_add(engine, "tenant", "other")))}
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield client, heads, RepliesService.open(engine, data_dir)
    engine.dispose()


def test_campaign_flow_and_tenant_wall(api) -> None:  # noqa: ANN001
    client, h, svc = api
    assert client.get("/api/v1/campaigns").status_code == 401
    assert client.get("/api/v1/campaigns", headers=h["admin"]).status_code == 422
    r = client.post("/api/v1/campaigns", json={"name": "Q1"}, headers=h["acme"])
    assert r.status_code == 201, r.text
    cid = r.json()["id"]
    assert client.post("/api/v1/campaigns", json={"name": "Q1"}, headers=h["acme"]).status_code == 409
    r = client.post(f"/api/v1/campaigns/{cid}/messages", headers=h["acme"],
                    json={"message_id": "<m1@acme.example>", "recipient": "anna@client.example", "step": 1,
                          "subject": "Quick question", "sent_at": "2026-01-02T09:00:00Z"})
    assert r.status_code == 201, r.text
    token = r.json()["reply_token"]
    assert client.get("/api/v1/messages/lookup", params={"message_id": "<m1@acme.example>"},
                      headers=h["acme"]).json()["reply_token"] == token
    assert client.get("/api/v1/messages/lookup", params={"token": token}, headers=h["acme"]).status_code == 200
    # The other tenant sees none of it, not even by naming the tenant.
    assert client.get("/api/v1/messages/lookup", params={"token": token}, headers=h["other"]).status_code == 404
    assert client.get(f"/api/v1/campaigns/{cid}", headers=h["other"]).status_code == 404
    assert client.get("/api/v1/campaigns", params={"tenant": "acme"}, headers=h["other"]).status_code == 404
    assert client.post(f"/api/v1/campaigns/{cid}/messages", headers=h["other"],
                       json={"message_id": "<x@o>", "recipient": "a@b.example"}).status_code == 404
    assert client.get("/api/v1/campaigns", params={"tenant": "acme"},
                      headers=h["admin"]).json()["items"][0]["name"] == "Q1"
    # A reply arrives; threads, replies and events are listed per campaign.
    svc.process_message(reply(in_reply_to="<m1@acme.example>"), Source("acme", "test"))
    threads = client.get("/api/v1/threads", params={"campaign_id": cid}, headers=h["acme"]).json()["items"]
    assert len(threads) == 1 and threads[0]["contact"] == "anna@client.example"
    replies = client.get(f"/api/v1/threads/{threads[0]['id']}/replies", headers=h["acme"]).json()["items"]
    assert [x["kind"] for x in replies] == ["human"]
    found = client.get("/api/v1/replies", params={"q": "tuesday"}, headers=h["acme"]).json()["items"]
    assert [x["id"] for x in found] == [replies[0]["id"]]
    assert client.get("/api/v1/replies", headers=h["other"]).json()["items"] == []
    full = client.get(f"/api/v1/replies/{replies[0]['id']}", headers=h["acme"]).json()
    assert "Tuesday" in full["text"]
    assert client.get(f"/api/v1/replies/{replies[0]['id']}", headers=h["other"]).status_code == 404
    events = client.get("/api/v1/events", params={"campaign_id": cid}, headers=h["acme"]).json()["items"]
    assert [e["type"] for e in events] == ["reply.received"]


def test_webhooks_and_suppressions(api) -> None:  # noqa: ANN001
    client, h, _svc = api
    r = client.post("/api/v1/webhooks/endpoints", headers=h["acme"],
                    json={"url": "https://hooks.example/in", "event_types": ["reply.received", "bounce.hard"]})
    assert r.status_code == 201 and r.json()["secret"].startswith("whsec_")
    eid = r.json()["id"]
    assert client.post("/api/v1/webhooks/endpoints", headers=h["acme"],
                       json={"url": "https://hooks.example/in", "event_types": ["nope"]}).status_code == 422
    assert client.post("/api/v1/webhooks/endpoints", headers=h["acme"],
                       json={"url": "ftp://hooks.example/in"}).status_code == 422
    listed = client.get("/api/v1/webhooks/endpoints", headers=h["acme"]).json()["items"]
    assert [e["id"] for e in listed] == [eid] and "secret" not in listed[0]
    assert client.delete(f"/api/v1/webhooks/endpoints/{eid}", headers=h["other"]).status_code == 404
    assert client.delete(f"/api/v1/webhooks/endpoints/{eid}", headers=h["acme"]).status_code == 204
    assert client.post("/api/v1/webhooks/deliveries/1/redeliver", headers=h["acme"]).status_code == 404
    assert client.post("/api/v1/suppressions", json={"address": "X@Y.example"}, headers=h["acme"]).status_code == 201
    assert client.get("/api/v1/suppressions", headers=h["acme"]).json()["items"][0]["address"] == "x@y.example"
    assert client.get("/api/v1/suppressions", headers=h["other"]).json()["items"] == []
    assert client.delete("/api/v1/suppressions/x@y.example", headers=h["acme"]).status_code == 204
