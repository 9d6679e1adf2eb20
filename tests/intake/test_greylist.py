"""Greylisting: the triplet logic on SQLite and PostgreSQL with a test-controlled clock, the MX answering
451 4.7.1 at RCPT over loopback, the per-domain/tenant switch, and a million-row table that the purge
and the lookups keep fast (their query plans use the indexes)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from dovetail.db import make_engine, migrate
from dovetail.intake.greylist import (
    Greylist,
    GreylistSettings,
    greylist,
    greylist_clients,
    greylist_state,
    normalize_sender,
)

from .conftest import Mx, session

DELAY = 300.0


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def engine(database_url: str):  # noqa: ANN201
    eng = make_engine(database_url)
    migrate(eng)
    yield eng
    eng.dispose()


def settings(**values) -> GreylistSettings:  # noqa: ANN003
    return GreylistSettings(**{"enabled": True, "delay": DELAY, "retry_window": 3600.0, "max_age": 86400.0,
                               "auto_allow_clients": 2, "exempt": [], **values})


def test_first_attempt_defers_a_retry_after_the_delay_passes(engine) -> None:  # noqa: ANN001
    clock = Clock()
    gl = Greylist(engine, settings(), clock=clock)
    first = gl.check("198.51.100.7", "News@Sender.Test", "bob@acme.example")
    assert (first.passed, first.reason, first.wait) == (False, "new", 300)
    assert first.reply().code == 451 and str(first.reply()) .endswith("4.7.1 Greylisted, try again in 300 seconds")
    clock.now += 100
    early = gl.check("198.51.100.99", "news@sender.test", "bob@acme.example")  # same /24, sender case ignored
    assert (early.passed, early.reason, early.wait) == (False, "early", 200)
    clock.now += 201
    assert gl.check("198.51.100.7", "news@sender.test", "bob@acme.example").reason == "retried"
    clock.now += 50_000
    assert gl.check("198.51.100.7", "news@sender.test", "bob@acme.example").reason == "known"
    # Another recipient is another triplet.
    assert gl.check("198.51.100.7", "news@sender.test", "carol@acme.example").reason == "new"


def test_senders_are_normalised_as_postgrey_does() -> None:
    assert normalize_sender("News@Sender.Test") == "news@sender.test"
    assert normalize_sender("bounce-12345-678@lists.test") == "bounce-#-#@lists.test"
    assert normalize_sender("prvs=1234abcd=alice@sender.test") == "alice@sender.test"
    assert normalize_sender("alice+list@sender.test") == "alice@sender.test"
    assert normalize_sender("") == ""


def test_retry_window_and_max_age_expire_entries(engine) -> None:  # noqa: ANN001
    clock = Clock()
    gl = Greylist(engine, settings(auto_allow_clients=0), clock=clock)
    assert gl.check("192.0.2.1", "a@s.test", "bob@acme.example").reason == "new"
    clock.now += 3601  # never retried within the window: starts over
    assert gl.check("192.0.2.1", "a@s.test", "bob@acme.example").reason == "new"
    clock.now += DELAY
    assert gl.check("192.0.2.1", "a@s.test", "bob@acme.example").reason == "retried"
    assert gl.check("192.0.2.1", "b@s.test", "bob@acme.example").reason == "new"
    clock.now += 3601
    assert gl.purge() == (1, 0)  # the unretried triplet; the passed one lives max_age
    clock.now += 86400
    assert gl.purge() == (1, 1)
    assert gl.triplets() == [] and gl.clients() == []


def test_client_network_is_auto_allowed_after_retries_and_by_hand(engine) -> None:  # noqa: ANN001
    clock = Clock()
    gl = Greylist(engine, settings(), clock=clock)
    for rcpt in ("one@acme.example", "two@acme.example"):
        gl.check("203.0.113.10", "a@s.test", rcpt)
    clock.now += DELAY
    for rcpt in ("one@acme.example", "two@acme.example"):
        assert gl.check("203.0.113.10", "a@s.test", rcpt).reason == "retried"
    assert gl.check("203.0.113.77", "new@other.test", "three@acme.example").reason == "client"
    assert gl.check("2001:db8::1", "x@s.test", "bob@acme.example").reason == "new"
    assert gl.allow("2001:db8::5") == "2001:db8::/64"
    assert gl.check("2001:db8::1", "x@s.test", "bob@acme.example").reason == "client"
    clock.now += 10 * 86400 * 365
    gl.purge()
    assert [r["network"] for r in gl.clients()] == ["2001:db8::/64"]  # allowed by hand: never expires
    assert gl.flush() == (0, 1)


async def _rcpt(port: int, source: str, rcpt: str, sender: str = "news@sender.test") -> tuple[int, str]:
    c = await session(port, source)
    try:
        assert (await c.cmd(f"MAIL FROM:<{sender}>"))[0] == 250
        reply = await c.cmd(f"RCPT TO:<{rcpt}>")
        if reply[0] == 250:
            assert (await c.cmd("DATA"))[0] == 354
            assert (await c.cmd("Subject: t\r\n\r\nhi\r\n."))[0] == 250
        return reply
    finally:
        await c.close()


def test_mx_greylists_at_rcpt_until_the_client_retries(mx: Mx) -> None:
    mx.directory.tenant_set("acme", greylist=True)

    async def run() -> None:
        port = await mx.start(mx.backend(greylist=settings(enabled=False)))
        try:
            assert await _rcpt(port, "127.0.20.5", "bob@acme.example") == (
                451, "4.7.1 Greylisted, try again in 300 seconds")
            # The sender's pool retries from a neighbour: same /24, still too early.
            code, text = await _rcpt(port, "127.0.20.6", "bob@acme.example")
            assert code == 451 and text.startswith("4.7.1 Greylisted, try again in ")
            # Time passes (the triplet was first seen longer ago than the delay).
            with mx.engine.begin() as conn:
                conn.execute(greylist.update().values(first_seen=greylist.c.first_seen - DELAY - 1))
            assert (await _rcpt(port, "127.0.20.5", "bob@acme.example"))[0] == 250
            assert (await _rcpt(port, "127.0.20.5", "bob@acme.example"))[0] == 250
            # An unknown recipient is refused for what it is, not greylisted.
            assert (await _rcpt(port, "127.0.21.1", "nobody@acme.example"))[0] == 550
        finally:
            await mx.stop()

    asyncio.run(run())
    assert len(mx.queue.ids("incoming")) == 2
    assert mx.counts["greylist_new"] == 1 and mx.counts["greylist_early"] == 1
    assert mx.counts["greylist_retried"] == 1 and mx.counts["greylist_known"] == 1


def test_domain_switch_overrides_tenant_and_global_default(mx: Mx) -> None:
    mx.directory.tenant_set("acme", greylist=True)
    mx.directory.domain_set("quiet.example", greylist=False)

    async def run() -> None:
        port = await mx.start(mx.backend(greylist=settings(enabled=False)))
        try:
            assert (await _rcpt(port, "127.0.22.1", "bob@acme.example"))[0] == 451
            assert (await _rcpt(port, "127.0.22.1", "eve@quiet.example"))[0] == 250
            mx.directory.tenant_set("acme", greylist=None)  # inherit the global default (off)
            assert (await _rcpt(port, "127.0.23.1", "bob@acme.example"))[0] == 250
        finally:
            await mx.stop()
        port = await mx.start(mx.backend(greylist=settings(enabled=True)))
        try:
            assert (await _rcpt(port, "127.0.24.1", "bob@acme.example"))[0] == 451
            assert (await _rcpt(port, "127.0.24.1", "eve@quiet.example"))[0] == 250
        finally:
            await mx.stop()
        # Exempt networks (loopback by default) are never greylisted.
        port = await mx.start(mx.backend(greylist=GreylistSettings(enabled=True)))
        try:
            assert (await _rcpt(port, "127.0.25.1", "bob@acme.example"))[0] == 250
        finally:
            await mx.stop()

    asyncio.run(run())


def test_greylist_state_lists_client_and_triplets(tmp_path: Path) -> None:
    from dovetail import config, datadir

    root = tmp_path / "data"
    root.mkdir()
    (root / config.CONFIG_NAME).write_text(config.default_file_text())
    datadir.init(root)
    cfg = config.load(root)
    engine = make_engine(cfg.database_url)
    gl = Greylist(engine, GreylistSettings.from_config(cfg))
    gl.check("192.0.2.8", "a@s.test", "bob@acme.example")
    gl.check("198.51.100.1", "a@s.test", "bob@acme.example")
    gl.allow("192.0.2.200")
    state = greylist_state(cfg, "192.0.2.9", engine)
    assert [(e["kind"], e["network"], e["status"]) for e in state] == [
        ("client", "192.0.2.0/24", "allowed"), ("triplet", "192.0.2.0/24", "greylisted")]


ROWS = 1_000_000


def test_a_million_rows_purge_and_lookup_stay_fast(tmp_path: Path) -> None:
    db = tmp_path / "dovetail.db"
    engine = make_engine(f"sqlite:///{db}")
    migrate(engine)
    now = 1_800_000_000.0
    expired = 10_000
    raw = sqlite3.connect(db)
    rows = ((f"10.{i >> 16 & 255}.{i >> 8 & 255}.0/24", f"s{i}@sender.test", f"r{i}@acme.example",
             now - 1000, now - 1000, i & 1, (now - 1) if i < expired else now + 86400) for i in range(ROWS))
    raw.executemany("INSERT INTO greylist VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    raw.commit()
    plan = " ".join(r[3] for r in raw.execute(
        "EXPLAIN QUERY PLAN DELETE FROM greylist WHERE expires < ?", (now,)))
    assert "ix_greylist_expires" in plan
    plan = " ".join(r[3] for r in raw.execute(
        "EXPLAIN QUERY PLAN SELECT first_seen FROM greylist WHERE network=? AND sender=? AND recipient=?",
        ("a", "b", "c")))
    assert "USING INDEX sqlite_autoindex_greylist_1 (network=? AND sender=? AND recipient=?)" in plan, plan
    raw.close()

    gl = Greylist(engine, settings(auto_allow_clients=0), clock=Clock(now))
    started = time.perf_counter()
    assert gl.purge() == (expired, 0)
    purge_time = time.perf_counter() - started
    started = time.perf_counter()
    for i in range(expired, expired + 200):
        ip = f"10.{i >> 16 & 255}.{i >> 8 & 255}.9"
        decision = gl.check(ip, f"s{i}@sender.test", f"r{i}@acme.example")
        assert decision.reason == ("known" if i & 1 else "retried")
    lookup_time = (time.perf_counter() - started) / 200
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(greylist)).scalar() == ROWS - expired
        # The 100 retried triplets all come from 10.0.39.0/24: one client row counting them.
        assert conn.execute(sa.select(greylist_clients.c.network, greylist_clients.c.passes)).all() == [
            ("10.0.39.0/24", 100)]
    engine.dispose()
    # Generous bounds for a shared machine: a full scan of a million rows would take far longer.
    assert purge_time < 5.0, purge_time
    assert lookup_time < 0.05, lookup_time


def test_workers_deciding_at_once_on_sqlite_all_get_an_answer(tmp_path: Path) -> None:
    import threading

    url = f"sqlite:///{tmp_path / 'dovetail.db'}"
    migrate(make_engine(url))
    errors: list[BaseException] = []
    decisions: list[str] = []
    clock = Clock()

    def worker(n: int) -> None:
        engine = make_engine(url)  # a worker process has its own engine and connections
        gl = Greylist(engine, settings(), clock=clock)
        try:
            for i in range(40):
                decisions.append(gl.check(f"192.0.2.{n}", "a@s.test", f"r{i % 10}@acme.example").reason)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(decisions) == 160 and set(decisions) <= {"new", "early"}
    assert decisions.count("new") == 10  # one per triplet, however the workers raced
    with make_engine(url).connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(greylist)).scalar() == 10
