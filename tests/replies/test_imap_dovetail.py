"""The IMAP source against Dovetail's own IMAP server, over implicit TLS and STARTTLS."""

from __future__ import annotations

import asyncio
import imaplib
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import trustme

from dovetail.imap.limits import Limits
from dovetail.imap.server import ImapServer
from dovetail.mailauth.accounts import DictAuthenticator
from dovetail.replies.imapc.client import ImapClient, ImapError
from dovetail.replies.schema import imap_accounts
from dovetail.replies.service import RepliesService
from dovetail.replies.sources.imap import ImapAccounts, ImapSource

from .mails import reply

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


class Running:
    def __init__(self, server: ImapServer) -> None:
        self.server = server
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = asyncio.run_coroutine_threadsafe(server.start(host="127.0.0.1", port=0), self.loop).result(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(1.0), self.loop).result(15)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def tls() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    return server_ctx, client_ctx


@pytest.fixture(params=["implicit", "starttls"])
def imap(request: pytest.FixtureRequest, tmp_path: Path, tls) -> Iterator[tuple[Running, str, Path]]:  # noqa: ANN001
    mail = tmp_path / "mail"
    box = mail / "bob"
    for sub in ("cur", "new", "tmp"):
        (box / sub).mkdir(parents=True)
    server = ImapServer(DictAuthenticator({"bob": "builder"}, mail), limits=Limits(auth_fail_base_delay=0.01),
                       ssl_context=tls[0], implicit_tls=request.param == "implicit")
    running = Running(server)
    yield running, request.param, box
    running.stop()


def test_sync_and_idle_over_tls(service: RepliesService, imap, tls) -> None:  # noqa: ANN001
    running, mode, box = imap
    service.registry.register_outbound("acme", "Q1", message_id="<a@acme.example>",
                                       recipient="anna@client.example", subject="Quick question")
    (box / "new" / f"{time.time_ns()}.1.test").write_bytes(reply(in_reply_to="<a@acme.example>",
                                                                 message_id="<d1@c>"))
    account = ImapAccounts(service.engine).add("acme", "own", host="127.0.0.1", port=running.port, tls=mode,
                                               username="bob", password="builder")

    def append() -> None:
        cls = imaplib.IMAP4_SSL if mode == "implicit" else imaplib.IMAP4
        kwargs = {"ssl_context": tls[1]} if mode == "implicit" else {}
        client = cls("127.0.0.1", running.port, **kwargs)
        if mode == "starttls":
            client.starttls(tls[1])
        client.login("bob", "builder")
        client.append("INBOX", None, imaplib.Time2Internaldate(time.time()),
                      reply(in_reply_to="<a@acme.example>", message_id="<d2@c>"))
        client.logout()

    async def main() -> ImapSource:
        synced: asyncio.Queue[int] = asyncio.Queue()
        source = ImapSource(service, account, ssl_context=tls[1], timeout=10, idle_timeout=60,
                            on_synced=synced.put_nowait)
        stop = asyncio.Event()
        task = asyncio.create_task(source.run(stop))
        try:
            assert await asyncio.wait_for(synced.get(), 15) == 1
            await asyncio.to_thread(append)
            while source.processed < 2:
                await asyncio.wait_for(synced.get(), 15)
        finally:
            stop.set()
            await asyncio.wait_for(task, 15)
        return source

    source = asyncio.run(main())
    assert source.processed == 2
    assert sorted(r["message_id"] for r in service.queries.replies("acme")) == ["d1@c", "d2@c"]
    assert all(r["match_method"] == "in_reply_to" for r in service.queries.replies("acme"))


def test_untrusted_certificate_is_refused(service: RepliesService, imap) -> None:  # noqa: ANN001
    running, mode, _box = imap
    account = ImapAccounts(service.engine).add("acme", "own", host="127.0.0.1", port=running.port, tls=mode,
                                               username="bob", password="builder")

    async def main() -> None:
        source = ImapSource(service, account, timeout=5)  # the system trust store: our test CA is not in it
        async with source._client() as client:
            await client.login("bob", "builder")

    with pytest.raises(ssl.SSLCertVerificationError):
        asyncio.run(main())


@pytest.mark.parametrize("how", ["stop", "cancel"])
def test_stop_or_cancel_during_idle_leaves_one_reader(service: RepliesService, imap, tls, how: str) -> None:  # noqa: ANN001
    """Stopped while it idles, the source ends IDLE with DONE and logs out; cancelled (a crash), it ends
    cancelled. No second reader ever waits on the connection: one once did, and its "read() called
    while another coroutine is already waiting" swallowed the cancellation and was recorded as the
    account's error."""
    running, mode, _box = imap
    account = ImapAccounts(service.engine).add("acme", "own", host="127.0.0.1", port=running.port, tls=mode,
                                               username="bob", password="builder")

    async def main() -> ImapSource:
        synced: asyncio.Queue[int] = asyncio.Queue()
        source = ImapSource(service, account, ssl_context=tls[1], timeout=10, idle_timeout=60,
                            on_synced=synced.put_nowait)
        stop = asyncio.Event()
        task = asyncio.create_task(source.run(stop))
        assert await asyncio.wait_for(synced.get(), 15) == 0  # synced, now in IDLE
        if how == "stop":
            stop.set()
            await asyncio.wait_for(task, 15)
        else:
            task.cancel()
            await asyncio.wait({task}, timeout=15)
            assert task.cancelled()
        return source

    source = asyncio.run(main())
    assert source.sessions == 1
    with service.engine.connect() as conn:
        error = conn.execute(sa.select(imap_accounts.c.last_error).where(imap_accounts.c.id == account.id)).scalar()
    assert error is None


@pytest.mark.usefixtures("database_url")  # the module's parametrisation; no database is used
def test_idle_until_then_commands_on_the_same_connection(imap, tls) -> None:  # noqa: ANN001
    running, mode, _box = imap

    async def main() -> None:
        async with ImapClient("127.0.0.1", running.port, tls=mode, ssl_context=tls[1], timeout=10) as client:
            await client.login("bob", "builder")
            await client.select("INBOX", readonly=False)
            stop = asyncio.Event()
            asyncio.get_running_loop().call_later(0.2, stop.set)
            assert await client.idle(60, until=stop) is False  # ended by ``until``, with DONE and its OK
            await client.noop()  # the connection is still in step
            idling = asyncio.create_task(client.idle(60))
            await asyncio.sleep(0)  # let it start: only the one task reads the connection
            commanding = asyncio.create_task(client.noop())  # waits for the connection, never reads beside IDLE
            idling.cancel()
            await asyncio.gather(idling, return_exceptions=True)
            # IDLE cut short leaves the stream out of step: the connection is closed, not reused.
            with pytest.raises(ImapError, match="unusable"):
                await commanding
        # leaving the block after that logs nothing out and raises nothing

    asyncio.run(main())
