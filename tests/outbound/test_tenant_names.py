"""Outbound names a tenant however the caller spells it (``ACME`` is tenant ``acme``), as the directory does."""

from __future__ import annotations

import pytest
from fastapi import FastAPI, Header, HTTPException
from fastapi.testclient import TestClient

from dovetail.outbound.api import make_router
from dovetail.outbound.credentials import SmtpCredentials
from dovetail.outbound.limits import SendLimiter
from dovetail.outbound.send import SendService
from dovetail.outbound.transports import Transports
from dovetail.queue import Queue, QueuedMessage


class _Scope:
    def __init__(self, tenant: str | None) -> None:
        self.tenant = tenant


def _scope(x_tenant: str = Header("")) -> _Scope:
    if x_tenant == "":
        raise HTTPException(401)
    return _Scope(None if x_tenant == "*" else x_tenant)


@pytest.fixture
def api(world, tmp_path):  # noqa: ANN001, ANN201
    queue = Queue(tmp_path / "queue")
    app = FastAPI()
    app.include_router(make_router(SendService(world.engine, queue), _scope))
    client = TestClient(app)
    client.queue = queue
    return client


BODY = {"from": "alice@Acme.Example", "to": ["bob@example.org"], "subject": "Hello", "text": "Hi"}


@pytest.mark.parametrize("caller, named", [("*", "ACME"), ("acme", "ACME"), ("Acme", None), ("ACME", "acme")])
def test_send_api_takes_the_tenant_in_any_case(api, caller: str, named: str | None) -> None:  # noqa: ANN001
    body = dict(BODY, tenant=named) if named else BODY
    r = api.post("/api/v1/messages", json=body, headers={"X-Tenant": caller})
    assert r.status_code == 202, r.text
    [qid] = api.queue.ids("incoming")
    env = QueuedMessage(qid, api.queue.path("incoming", qid)).envelope
    assert env.extra["tenant"] == "acme" and env.sender == "alice@acme.example"


def test_send_api_still_refuses_another_tenant_and_an_unknown_one(api) -> None:  # noqa: ANN001
    assert api.post("/api/v1/messages", json=dict(BODY, tenant="GLOBEX"), headers={"X-Tenant": "acme"}
                    ).status_code == 403
    assert api.post("/api/v1/messages", json=BODY, headers={"X-Tenant": "Globex"}).status_code == 403
    assert api.post("/api/v1/messages", json=dict(BODY, tenant="nobody"), headers={"X-Tenant": "*"}
                    ).status_code == 404
    assert api.queue.ids("incoming") == []


def test_limits_are_one_bucket_per_tenant_however_spelt(world) -> None:  # noqa: ANN001
    SendLimiter(world.engine).set_limits("ACME", per_minute=1)
    limiter = SendLimiter(world.engine)
    assert limiter.consume("Acme", 1) is None
    refused = limiter.check("acme", 1)
    assert refused is not None and refused.kind == "rate"
    assert limiter.consume("ACME", 1) is not None
    assert limiter.check("globex", 1) is None
    with pytest.raises(ValueError, match="no such tenant"):
        limiter.set_limits("nobody", per_minute=1)


def test_credentials_and_transports_take_the_tenant_in_any_case(world) -> None:  # noqa: ANN001
    creds = SmtpCredentials(world.engine)
    made = creds.add("ACME")
    assert made.tenant == "acme" and made.username.startswith("acme-")
    assert [r["username"] for r in creds.list("Acme")] == [made.username]
    assert [r["tenant"] for r in creds.list()] == ["acme"]
    assert creds.list("globex") == [] and creds.list("nobody") == []
    assert creds.tenant_of(made.username) == "acme"
    transports = Transports(world.engine, check_interval=0)
    transports.set("tenant", "ACME", "relay", host="relay.example", port=2525, tls="none", check_host=None)
    assert transports.for_sender("x@news.acme.example").port == 2525  # the domain's tenant
    assert transports.for_sender("x@elsewhere.example", tenant="Acme").port == 2525
    assert transports.for_domain("NEWS.ACME.example").port == 2525
    assert transports.for_sender("x@globex.example").kind == "mx"
