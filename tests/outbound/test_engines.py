"""The outbound tables on both database engines: migration 0004 and the stores over it."""

from __future__ import annotations

from pathlib import Path

import pytest

from dovetail.db import make_engine
from dovetail.directory import Directory
from dovetail.outbound.compose import Draft
from dovetail.outbound.credentials import SmtpCredentials
from dovetail.outbound.keys import DkimKeys
from dovetail.outbound.limits import SendLimiter
from dovetail.outbound.send import SendError, SendRequest, SendService
from dovetail.outbound.transports import Transports
from dovetail.queue import Queue


def test_stores_on_each_engine(data_dir: Path, database_url: str, tmp_path: Path) -> None:
    import asyncio

    from dovetail import config

    engine = make_engine(config.load(data_dir).database_url)
    d = Directory(engine)
    d.tenant_add("acme")
    d.domain_add("acme.example", "acme")
    keys = DkimKeys(engine, data_dir / "dkim")
    assert len(keys.ensure("acme.example")) == 2 and len(keys.rotate("acme.example")) == 2
    keys.activate("acme.example")
    assert len(keys.retire("acme.example")) == 2 and len(keys.signing_keys("acme.example")) == 2
    cred = SmtpCredentials(engine).add("acme")
    assert asyncio.run(SmtpCredentials(engine).verify(cred.username, cred.secret)) == "acme"
    assert asyncio.run(SmtpCredentials(engine).verify(cred.username, "nope")) is None
    Transports(engine).set("domain", "acme.example", "relay", host="relay.example", port=2525, tls="none",
                           check_host=None)
    assert Transports(engine).for_sender("x@acme.example").port == 2525
    limiter = SendLimiter(engine)
    limiter.set_limits("acme", per_day=3)
    assert limiter.consume("acme", 2) is None and limiter.consume("acme", 1) is None
    assert limiter.consume("acme", 1).kind == "quota"
    limiter.set_limits("acme")
    svc = SendService(engine, Queue(tmp_path / "q"))
    req = SendRequest(Draft(from_="a@acme.example", to=["b@example.org"], subject="s", text="t"))
    first = svc.send("acme", req, "k1")
    assert svc.send("acme", req, "k1").message_id == first.message_id
    with pytest.raises(SendError) as exc:
        svc.send("acme", SendRequest(Draft(from_="a@acme.example", to=["c@example.org"], subject="s", text="t")),
                 "k1")
    assert exc.value.status == 409
    d.tenant_rm("acme", force=True)  # cascades through the outbound rows
    assert keys.list() == [] and SmtpCredentials(engine).list() == []
