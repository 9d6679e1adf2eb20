"""PostgreSQL restarted under SMTP traffic: the MX answers each message 250 (then it is delivered) or
4xx (the client retries); never a 5xx, never a 250 for a message that is then lost."""

from __future__ import annotations

import asyncio
import smtplib
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from dovetail.db import make_engine, migrate
from dovetail.directory import Directory, Resolver
from dovetail.queue import Queue

from ..master.harness import Master, wait_for
from ..pgcluster import PgCluster
from .conftest import Node, talk

MAX_MESSAGES = 2000


@pytest.fixture(scope="module")
def own_pg() -> Iterator[PgCluster]:
    """A cluster of this module's own: restarting the session's would cut other tests' connections."""
    cluster = PgCluster()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def send_one(m: Master, n: int) -> str:
    """The outcome of message ``n``: "250", or the first 4xx/5xx code, or "cut" (no answer)."""
    rcpt = f"bob+{n}@acme.example"  # a new address each time: looked up in the database, not in a cache
    body = f"From: a@ext.example\r\nTo: {rcpt}\r\nSubject: pg-restart-{n}\r\n\r\nmessage {n}\r\n"
    try:
        with m.smtp() as s:
            s.sendmail("a@ext.example", [rcpt], body)
        return "250"
    except smtplib.SMTPRecipientsRefused as exc:
        return str(next(iter(exc.recipients.values()))[0])
    except smtplib.SMTPResponseException as exc:
        return str(exc.smtp_code)
    except (OSError, smtplib.SMTPServerDisconnected):
        return "cut"


@pytest.mark.timeout(600)
def test_a_postgresql_restart_mid_traffic_loses_no_accepted_message(tmp_path: Path, own_pg: PgCluster) -> None:
    m = Master.create(tmp_path, database_url=own_pg.new_database())
    outcomes: dict[int, str] = {}
    progress = threading.Condition()

    done = threading.Event()

    def traffic() -> None:
        for n in range(MAX_MESSAGES):
            if done.is_set():
                return
            outcome = send_one(m, n)
            with progress:
                outcomes[n] = outcome
                progress.notify_all()

    def sent_at_least(k: int) -> int:
        with progress:
            assert progress.wait_for(lambda: len(outcomes) >= k, timeout=120), f"{len(outcomes)} sent"
            return len(outcomes)

    sender = threading.Thread(target=traffic)
    try:
        try:
            m.start()
        except AssertionError:  # not ready within the harness's 30 s on a loaded machine; a dead master raises again
            m.wait_ready(180)
        sender.start()
        sent_at_least(10)
        own_pg.halt()  # pg_ctl stop -m fast: every session cut mid-whatever it was doing
        down_from = len(outcomes)
        sent_at_least(down_from + 5)  # messages while the database is down
        own_pg.resume()
        up_from = sent_at_least(len(outcomes) + 1)
        last = sent_at_least(up_from + 10)  # and after it is back
        done.set()
        sender.join(timeout=120)
        assert not sender.is_alive()
        accepted = {n for n, o in outcomes.items() if o == "250"}
        refused = {n: o for n, o in outcomes.items() if o != "250"}
        assert all(o.startswith("4") for o in refused.values()), refused  # never a 5xx, never silence
        assert any(n >= down_from for n in refused)  # the outage was seen (not all answered from a cache)
        # Before the outage and once it is over, mail goes through: the services reconnected by themselves.
        assert set(range(10)) <= accepted and set(range(up_from + 5, last)) <= accepted, outcomes
        # What the MX took while the database was down is queued and delivered once it is back.
        wait_for(lambda: len(m.maildir_files()) >= len(accepted), 180, "every accepted message delivered")
        subjects = [line for p in m.maildir_files() for line in p.read_text().splitlines()
                    if line.startswith("Subject: pg-restart-")]
        delivered = [int(s.rsplit("-", 1)[1]) for s in subjects]
        assert sorted(delivered) == sorted(set(delivered))  # none twice
        assert accepted <= set(delivered)  # none lost
        assert set(delivered) <= accepted | set(refused)  # nothing that was never sent

    finally:
        done.set()
        if sender.is_alive():
            sender.join(timeout=120)
        if own_pg.data.exists() and not (own_pg.data / "postmaster.pid").exists():
            own_pg.resume()
        m.stop()
        m.cleanup()


def test_lmtpd_answers_4xx_while_the_database_is_down_and_saves_once_it_is_back(tmp_path: Path,
                                                                                own_pg: PgCluster) -> None:
    engine = make_engine(own_pg.new_database())
    migrate(engine)
    directory = Directory(engine)
    directory.tenant_add("acme")
    directory.domain_add("acme.example", "acme")
    directory.mailbox_add("bob@acme.example", None)
    (tmp_path / "spool").mkdir()
    node = Node(tmp_path, directory, Resolver(directory, tmp_path / "mail", check_interval=0),
                Queue(tmp_path / "queue"))
    session = [b"LHLO mx.test\r\n", b"MAIL FROM:<alice@ext.example>\r\n", b"RCPT TO:<bob@acme.example>\r\n",
               b"DATA\r\n", b"Subject: while down\r\n\r\nhello\r\n.\r\n", b"QUIT\r\n"]

    async def deliver(lines: list[bytes]) -> list[str]:
        server = node.server()
        await server.start(host="127.0.0.1", port=0)
        try:
            return [line for line in await talk(server.port, lines) if line[3:4] == " "]
        finally:
            await server.stop(1)

    try:
        own_pg.halt()
        try:
            down = asyncio.run(deliver([*session[:3], b"QUIT\r\n"]))
        finally:
            own_pg.resume()
        assert down[3].startswith("451 4.3.0"), down  # the recipient: try again later, not unknown
        assert not any(line.startswith("5") for line in down), down
        up = asyncio.run(deliver(session))  # the same engine: its pool reconnects by itself
        assert up[3] == "250 2.1.5 Ok" and up[5] == "250 2.0.0 <bob@acme.example> Saved", up
        assert len(node.messages("bob@acme.example")) == 1
    finally:
        engine.dispose()
