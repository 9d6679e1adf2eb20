"""``POST /api/v1/messages`` and the batch endpoint, through FastAPI's test client."""

from __future__ import annotations

import email
import email.policy

import pytest
from fastapi import FastAPI, Header, HTTPException
from fastapi.testclient import TestClient

from dovetail.outbound.api import make_router
from dovetail.outbound.compose import new_token
from dovetail.outbound.events import MemorySuppressions
from dovetail.outbound.limits import SendLimiter
from dovetail.outbound.send import SendService
from dovetail.queue import Queue, QueuedMessage


class Registry:
    def __init__(self) -> None:
        self.sent: list[dict] = []

    def new_reply_token(self, tenant: str) -> str:
        return new_token()

    def unsubscribe_token(self, tenant: str, reply_token: str, recipient: str) -> str:
        return f"{tenant}.{reply_token}.{recipient}"

    def register_outbound(self, **kw) -> None:  # noqa: ANN003
        self.sent.append(kw)


class Scope:
    def __init__(self, tenant: str | None) -> None:
        self.tenant = tenant


def get_scope(x_tenant: str = Header("")) -> Scope:
    if x_tenant == "":
        raise HTTPException(401)
    return Scope(None if x_tenant == "*" else x_tenant)


@pytest.fixture
def api(world, tmp_path):  # noqa: ANN001, ANN201
    queue = Queue(tmp_path / "queue")
    supp = MemorySuppressions()
    registry = Registry()
    service = SendService(world.engine, queue, suppressions=supp, registry=registry,
                          public_url="https://mail.acme.example")
    app = FastAPI()
    app.include_router(make_router(service, get_scope))
    client = TestClient(app)
    client.queue, client.supp, client.registry, client.service = queue, supp, registry, service
    return client


def queued_messages(queue: Queue) -> list[QueuedMessage]:
    return [QueuedMessage(q, queue.path("incoming", q)) for q in queue.ids("incoming")]


BODY = {"from": "Alice <alice@acme.example>", "to": ["bob@example.org"], "subject": "Hello",
        "text": "Hi Bob", "html": "<p>Hi Bob</p>", "campaign": "spring", "track_replies": True,
        "headers": {"X-Campaign-Ref": "s-1"}}


def test_send_builds_mime_queues_and_registers(api) -> None:  # noqa: ANN001
    r = api.post("/api/v1/messages", json=BODY, headers={"X-Tenant": "acme"})
    assert r.status_code == 202, r.text
    out = r.json()
    [m] = queued_messages(api.queue)
    assert m.queue_id == out["queue_id"]
    assert [x.address for x in m.envelope.recipients] == ["bob@example.org"]
    assert m.envelope.sender == "alice@acme.example" and m.envelope.extra["tenant"] == "acme"
    assert m.envelope.extra["campaign"] == "spring"
    msg = email.message_from_bytes(m.read_message(), policy=email.policy.default)
    assert msg["Message-ID"] == out["message_id"] and out["message_id"].endswith("@acme.example>")
    assert msg["Reply-To"] == f"reply+{out['reply_token']}@acme.example"
    token = out["reply_token"]
    assert msg["List-Unsubscribe"] == (f"<https://mail.acme.example/unsubscribe/acme.{token}.bob@example.org>, "
                                       f"<mailto:unsubscribe+{token}@acme.example>")
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["X-Campaign-Ref"] == "s-1"
    assert msg.get_content_type() == "multipart/alternative"
    assert msg.get_body(("plain",)).get_content().strip() == "Hi Bob"
    [reg] = api.registry.sent
    assert reg["message_id"] == out["message_id"] and reg["campaign"] == "spring"
    assert reg["reply_token"] == out["reply_token"]


def test_attachment_and_bcc(api) -> None:  # noqa: ANN001
    body = {"from": "alice@acme.example", "to": ["bob@example.org"], "bcc": ["hidden@example.org"],
            "subject": "file", "text": "see attached",
            "attachments": [{"filename": "a.txt", "content_type": "text/plain", "content": "aGVsbG8="}]}
    r = api.post("/api/v1/messages", json=body, headers={"X-Tenant": "acme"})
    assert r.status_code == 202, r.text
    [m] = queued_messages(api.queue)
    assert {x.address for x in m.envelope.recipients} == {"bob@example.org", "hidden@example.org"}
    raw = m.read_message()
    assert b"hidden@example.org" not in raw  # Bcc never reaches the headers
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    [att] = list(msg.iter_attachments())
    assert att.get_filename() == "a.txt" and att.get_content() == "hello"
    assert b"List-Unsubscribe" not in raw  # not a campaign


def test_sending_as_another_tenants_domain_is_refused(api) -> None:  # noqa: ANN001
    body = dict(BODY, **{"from": "ceo@globex.example"})
    r = api.post("/api/v1/messages", json=body, headers={"X-Tenant": "acme"})
    assert r.status_code == 403 and "globex.example" in r.json()["detail"]
    assert r.headers["content-type"] == "application/problem+json"
    r = api.post("/api/v1/messages", json=dict(BODY, tenant="globex"), headers={"X-Tenant": "acme"})
    assert r.status_code == 403
    assert queued_messages(api.queue) == []
    # an administrator names the tenant, and the wall still holds
    r = api.post("/api/v1/messages", json=dict(BODY, tenant="globex"), headers={"X-Tenant": "*"})
    assert r.status_code == 403
    r = api.post("/api/v1/messages", json=dict(BODY, tenant="acme"), headers={"X-Tenant": "*"})
    assert r.status_code == 202


def test_suppression_is_honoured(api) -> None:  # noqa: ANN001
    api.supp.add("acme", "Bob@Example.org")
    api.supp.add("globex", "carol@example.org")  # another tenant's list does not apply
    r = api.post("/api/v1/messages", json=dict(BODY, to=["bob@example.org"]), headers={"X-Tenant": "acme"})
    assert r.status_code == 202
    assert r.json()["queue_id"] is None and r.json()["suppressed"] == ["bob@example.org"]
    assert queued_messages(api.queue) == []
    r = api.post("/api/v1/messages", json=dict(BODY, to=["bob@example.org", "carol@example.org"]),
                 headers={"X-Tenant": "acme"})
    [m] = queued_messages(api.queue)
    assert [x.address for x in m.envelope.recipients] == ["carol@example.org"]
    assert r.json()["accepted"] == ["carol@example.org"]


def test_idempotency_key(api) -> None:  # noqa: ANN001
    h = {"X-Tenant": "acme", "Idempotency-Key": "order-42"}
    first = api.post("/api/v1/messages", json=BODY, headers=h)
    again = api.post("/api/v1/messages", json=BODY, headers=h)
    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["message_id"] == first.json()["message_id"] and again.json()["replayed"]
    assert len(queued_messages(api.queue)) == 1
    other = api.post("/api/v1/messages", json=dict(BODY, subject="changed"), headers=h)
    assert other.status_code == 409
    # keys are per tenant
    g = api.post("/api/v1/messages", json=dict(BODY, **{"from": "gina@globex.example"}),
                 headers={"X-Tenant": "globex", "Idempotency-Key": "order-42"})
    assert g.status_code == 202
    # a refused request does not burn its key
    bad = {"X-Tenant": "acme", "Idempotency-Key": "k2"}
    assert api.post("/api/v1/messages", json=dict(BODY, headers={"Received": "x"}), headers=bad).status_code == 422
    assert api.post("/api/v1/messages", json=BODY, headers=bad).status_code == 202
    assert len(queued_messages(api.queue)) == 3


def test_batch_with_variables(api) -> None:  # noqa: ANN001
    body = {"from": "alice@acme.example", "subject": "Hi {{name}}", "text": "Dear {{ name }}, code {{code}}",
            "campaign": "promo", "recipients": [
                {"to": "bob@example.org", "variables": {"name": "Bob", "code": "B1"}},
                {"to": "carol@example.org", "variables": {"name": "Carol", "code": "C2"}},
                {"to": "not an address", "variables": {}}]}
    r = api.post("/api/v1/messages/batch", json=body, headers={"X-Tenant": "acme", "Idempotency-Key": "b1"})
    assert r.status_code == 202, r.text
    res = r.json()["results"]
    assert res[2]["error"]["status"] == 422
    msgs = {m.envelope.recipients[0].address: m for m in queued_messages(api.queue)}
    assert set(msgs) == {"bob@example.org", "carol@example.org"}
    carol = email.message_from_bytes(msgs["carol@example.org"].read_message(), policy=email.policy.default)
    assert carol["Subject"] == "Hi Carol" and "Dear Carol, code C2" in carol.get_content()
    again = api.post("/api/v1/messages/batch", json=body, headers={"X-Tenant": "acme", "Idempotency-Key": "b1"})
    assert [x.get("replayed") for x in again.json()["results"][:2]] == [True, True]
    assert len(queued_messages(api.queue)) == 2


def test_bad_input_is_refused_cleanly(api) -> None:  # noqa: ANN001
    h = {"X-Tenant": "acme"}
    cases = [dict(BODY, headers={"X-Evil": "a\r\nBcc: x@y"}), dict(BODY, subject="a\nb"),
             dict(BODY, to=["nobody"]), dict(BODY, text=None, html=None), dict(BODY, to=[]),
             dict(BODY, headers={"DKIM-Signature": "v=1"}),
             dict(BODY, attachments=[{"filename": "x", "content": "!!notbase64"}]),
             dict(BODY, attachments=[{"filename": "../x", "content": "aGk="}])]
    for body in cases:
        r = api.post("/api/v1/messages", json=body, headers=h)
        assert r.status_code == 422, (body, r.text)
    assert api.post("/api/v1/messages", json=dict(BODY, unknown=1), headers=h).status_code == 422
    assert queued_messages(api.queue) == []


def test_rate_limit_answers_429(api, world) -> None:  # noqa: ANN001
    SendLimiter(world.engine).set_limits("acme", per_minute=2)
    api.service.limiter = SendLimiter(world.engine)
    codes = [api.post("/api/v1/messages", json=BODY, headers={"X-Tenant": "acme"}).status_code for _ in range(3)]
    assert codes == [202, 202, 429]
    SendLimiter(world.engine).set_limits("globex", per_day=1)
    g = dict(BODY, **{"from": "gina@globex.example"}, to=["a@example.org", "b@example.org"])
    r = api.post("/api/v1/messages", json=g, headers={"X-Tenant": "globex"})
    assert r.status_code == 429 and "quota" in r.json()["detail"]


@pytest.mark.parametrize("name", ["Resent-From", "Sender", "Authentication-Results", "ARC-Seal", "DKIM-Signature"])
def test_headers_that_speak_for_the_sender_or_the_verifier_cannot_be_set(api, name: str) -> None:  # noqa: ANN001
    body = dict(BODY, headers={name: "ceo@globex.example"})
    r = api.post("/api/v1/messages", json=body, headers={"X-Tenant": "acme"})
    assert r.status_code == 422 and name.lower() in r.text.lower()


def test_one_click_link_only_for_one_recipient_and_with_a_public_url(api) -> None:  # noqa: ANN001
    two = dict(BODY, to=["bob@example.org", "carol@example.org"])
    r = api.post("/api/v1/messages", json=two, headers={"X-Tenant": "acme"})
    assert r.status_code == 202, r.text
    [m] = queued_messages(api.queue)
    msg = email.message_from_bytes(m.read_message(), policy=email.policy.default)
    # A link names the one address it unsubscribes; a message to two people cannot carry one for each.
    assert msg["List-Unsubscribe"] == f"<mailto:unsubscribe+{r.json()['reply_token']}@acme.example>"
    assert msg["List-Unsubscribe-Post"] is None

    api.service.public_url = None  # web.public_url not set
    r = api.post("/api/v1/messages", json=dict(BODY, subject="again"), headers={"X-Tenant": "acme"})
    assert r.status_code == 202, r.text
    [m] = [q for q in queued_messages(api.queue) if q.queue_id == r.json()["queue_id"]]
    msg = email.message_from_bytes(m.read_message(), policy=email.policy.default)
    assert msg["List-Unsubscribe"] == f"<mailto:unsubscribe+{r.json()['reply_token']}@acme.example>"
    assert msg["List-Unsubscribe-Post"] is None
