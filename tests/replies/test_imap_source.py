"""The IMAP source against a real Dovecot: checkpoints, restarts, IDLE, reconnects, UIDVALIDITY."""

from __future__ import annotations

import asyncio
import imaplib
import subprocess
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from dovetail.replies.dispatcher import Dispatcher
from dovetail.replies.schema import events, imap_accounts
from dovetail.replies.service import RepliesService
from dovetail.replies.sources.imap import ImapAccounts, ImapSource
from tests.interop_dovecot import DOVEADM, DovecotInstance, dovecot  # noqa: F401

from .mails import reply
from .receiver import Receiver

pytestmark = [pytest.mark.interop, pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)]

USER = "replies@acme.example"


def _drop(box: Path, dovecot: DovecotInstance, raw: bytes, name: str) -> None:  # noqa: F811
    (box / "new" / f"{time.time_ns()}.{name}.test").write_bytes(raw.replace(b"\r\n", b"\n"))
    dovecot.hand_over()


def _account(service: RepliesService, dovecot: DovecotInstance):  # noqa: ANN202, F811
    account = ImapAccounts(service.engine, service.sealer).add(
        "acme", "inbox", host="127.0.0.1", port=dovecot.port, tls="none", username=USER, password="secret")
    with service.engine.connect() as conn:  # sealed at rest; the source opens it to log in to Dovecot
        stored = conn.execute(sa.select(imap_accounts.c.password)).scalar_one()
    assert stored.startswith("sealed:v1:") and "secret" not in stored
    assert ImapAccounts(service.engine, service.sealer).list()[0].password == "secret"
    return account


def _events(service: RepliesService) -> int:
    with service.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(events)).scalar_one()


def test_sync_from_checkpoint_survives_restart(service: RepliesService, dovecot: DovecotInstance) -> None:  # noqa: F811
    box = dovecot.add_user(USER, "secret")
    ob = service.registry.register_outbound("acme", "Q1", message_id="<a@acme.example>",
                                            recipient="anna@client.example", subject="Quick question")
    _drop(box, dovecot, reply(in_reply_to="<a@acme.example>", message_id="<i1@c>"), "one")
    _drop(box, dovecot, reply(to=f"reply+{ob.reply_token}@in.acme.example", message_id="<i2@c>"), "two")
    account = _account(service, dovecot)

    async def one_sync() -> int:
        source = ImapSource(service, account, timeout=10)
        async with source._client() as client:
            await client.login(USER, "secret")
            return await source.sync(client)

    assert asyncio.run(one_sync()) == 2
    uidvalidity, last = ImapAccounts(service.engine).checkpoint(account.id, "INBOX")
    assert last >= 2
    assert asyncio.run(one_sync()) == 0  # a restarted source starts at the checkpoint
    _drop(box, dovecot, reply(message_id="<i3@c>", frm="new@client.example", subject="Hello"), "three")
    assert asyncio.run(one_sync()) == 1
    replies = service.queries.replies("acme")
    assert {r["match_method"] for r in replies} == {"in_reply_to", "token", "none"}
    assert _events(service) == 3
    # The folder's UIDVALIDITY changes: everything is read again, nothing is emitted twice.
    ImapAccounts(service.engine).save_checkpoint(account.id, "INBOX", uidvalidity + 1, last + 1)
    assert asyncio.run(one_sync()) == 3
    assert _events(service) == 3
    assert ImapAccounts(service.engine).checkpoint(account.id, "INBOX") == (uidvalidity, last + 1)


def test_idle_wakes_and_reconnects_after_kick(service: RepliesService, dovecot: DovecotInstance) -> None:  # noqa: F811
    dovecot.add_user(USER, "secret")
    service.registry.register_outbound("acme", "Q1", message_id="<a@acme.example>",
                                       recipient="anna@client.example", subject="Quick question")
    receiver = Receiver().start()
    receiver.secret = service.outbox.add_endpoint("acme", receiver.url)["secret"]
    account = _account(service, dovecot)

    def append(n: int) -> None:
        imap = dovecot.imap(USER)
        try:
            imap.append("INBOX", None, imaplib.Time2Internaldate(time.time()),
                        reply(in_reply_to="<a@acme.example>", message_id=f"<idle{n}@c>"))
        finally:
            imap.logout()

    async def main() -> None:
        synced: asyncio.Queue[int] = asyncio.Queue()
        source = ImapSource(service, account, timeout=10, backoff=(0.05, 0.2),
                            on_synced=lambda n: synced.put_nowait(n))
        stop = asyncio.Event()
        task = asyncio.create_task(source.run(stop))
        dispatcher = Dispatcher(service.outbox)
        try:
            assert await asyncio.wait_for(synced.get(), 15) == 0  # the first sync: empty folder, now idling
            await asyncio.to_thread(append, 1)
            while source.processed < 1:
                await asyncio.wait_for(synced.get(), 15)
            # Kick the session: the source reconnects and carries on from its checkpoint.
            await asyncio.to_thread(subprocess.run, [DOVEADM, "-c", str(dovecot.conf), "kick", USER],
                                    check=False, capture_output=True)
            await asyncio.to_thread(append, 2)
            while source.processed < 2:
                await asyncio.wait_for(synced.get(), 15)
            await dispatcher.run_once()
        finally:
            stop.set()
            await asyncio.wait_for(task, 15)
        assert source.processed == 2
        assert source.sessions >= 2  # reconnected after the kick

    try:
        asyncio.run(main())
        got = receiver.wait_for(2)
    finally:
        receiver.stop()
    assert sorted(p["data"]["reply"]["message_id"] for p in got) == ["idle1@c", "idle2@c"]
    assert all(p["type"] == "reply.received" and p["data"]["campaign"]["name"] == "Q1" for p in got)
