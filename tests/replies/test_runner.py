"""The replies service as the master runs it: local deliveries and an IMAP account, to webhooks."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from dovetail.replies.runner import RepliesEngine
from dovetail.replies.sources.imap import ImapAccounts
from dovetail.replies.sources.local import LocalHook

from .mails import reply
from .receiver import Receiver
from .stack import allow_local_webhooks
from .test_imap_dovetail import Running, tls  # noqa: F401

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def test_engine_end_to_end(engine, tmp_path: Path, tls) -> None:  # noqa: ANN001, F811
    from dovetail.imap.limits import Limits
    from dovetail.imap.server import ImapServer
    from dovetail.mailauth.accounts import DictAuthenticator

    mail = tmp_path / "mail"
    box = mail / "bob"
    for sub in ("cur", "new", "tmp"):
        (box / sub).mkdir(parents=True)
    (box / "new" / f"{time.time_ns()}.1.test").write_bytes(reply(in_reply_to="<a@acme.example>",
                                                                 message_id="<via-imap@c>"))
    server = Running(ImapServer(DictAuthenticator({"bob": "builder"}, mail), limits=Limits(auth_fail_base_delay=0.01),
                                ssl_context=tls[0], implicit_tls=True))
    receiver = Receiver().start()
    try:
        allow_local_webhooks(tmp_path / "data")
        rengine = RepliesEngine(engine, tmp_path / "data", ssl_context=tls[1], account_refresh=0.2)
        svc = rengine.service
        svc.registry.register_outbound("acme", "Q1", message_id="<a@acme.example>", recipient="anna@client.example")
        receiver.secret = svc.outbox.add_endpoint("acme", receiver.url)["secret"]
        hook = LocalHook(svc)
        hook.mark("acme", "replies@acme.example")
        local = tmp_path / "local"
        for sub in ("cur", "new", "tmp"):
            (local / sub).mkdir(parents=True)
        (local / "new" / "1.local").write_bytes(reply(in_reply_to="<a@acme.example>", message_id="<via-local@c>"))

        async def main() -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(rengine.run(stop))
            # The delivery agent's hook, from another thread as the qmgr process would call it.
            await asyncio.to_thread(hook.on_delivered, "acme", "replies@acme.example", local, "1.local")
            ImapAccounts(engine).add("acme", "bob", host="127.0.0.1", port=server.port, tls="implicit",
                                     username="bob", password="builder")
            await asyncio.to_thread(receiver.wait_for, 2, 20)
            stop.set()
            await asyncio.wait_for(task, 15)

        asyncio.run(main())
    finally:
        receiver.stop()
        server.stop()
    ids = sorted(p["data"]["reply"]["message_id"] for p in receiver.received)
    assert ids == ["via-imap@c", "via-local@c"]
    assert {p["data"]["campaign"]["name"] for p in receiver.received} == {"Q1"}
