"""Greylisting at RCPT, as postgrey does it for Postfix: a first attempt is deferred, a retry passes.

A triplet is the client's network (/24 or /64: a sender's outbound pool retries from a neighbour
address), the envelope sender and the recipient. The first time a triplet is seen the MX answers
``451 4.7.1 Greylisted, try again in N seconds``; a retry after ``delay`` passes, and the triplet is
then known for ``max_age``. A triplet never retried within ``retry_window`` is forgotten, and a
client network that retried successfully ``auto_allow_clients`` times passes from then on
(postgrey's ``--auto-whitelist-clients``); ``dovetail greylist allow`` does that by hand.

The rows live in the main database (tables ``greylist`` and ``greylist_clients``), which every MX
worker and node shares. Each row carries the time it ``expires``, indexed, so the periodic purge is
one range delete however large the table grows; lookups go by primary key. Hand-written: postgrey is
a Perl policy daemon over Berkeley DB, and no Python library keeps a greylist in SQL.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError

from ..config import Config
from ..log import get_logger
from ..mailauth.networks import Network, in_networks, parse_networks
from ..smtp.reply import Reply
from .ratelimit import client_network

metadata = sa.MetaData()

greylist = sa.Table(
    "greylist", metadata,
    sa.Column("network", sa.String(64), nullable=False),
    sa.Column("sender", sa.String(320), nullable=False),  # normalize_sender(); "" for the null sender
    sa.Column("recipient", sa.String(320), nullable=False),
    sa.Column("first_seen", sa.Float, nullable=False),
    sa.Column("last_seen", sa.Float, nullable=False),
    sa.Column("passed", sa.Integer, nullable=False, server_default="0"),  # retries that got through
    sa.Column("expires", sa.Float, nullable=False),
    sa.PrimaryKeyConstraint("network", "sender", "recipient", name="pk_greylist"),
    sa.Index("ix_greylist_expires", "expires"),
)

greylist_clients = sa.Table(
    "greylist_clients", metadata,
    sa.Column("network", sa.String(64), primary_key=True),
    sa.Column("passes", sa.Integer, nullable=False, server_default="0"),
    sa.Column("allowed", sa.Boolean, nullable=False, server_default=sa.false()),  # by hand: always passes
    sa.Column("last_seen", sa.Float, nullable=False),
    sa.Column("expires", sa.Float, nullable=False),
    sa.Index("ix_greylist_clients_expires", "expires"),
)

NEVER = 9.0e15  # "expires" of a client allowed by hand
LOCKED_ATTEMPTS = 8
TOUCH_EVERY = 3600.0  # a known triplet's last_seen is rewritten at most this often (fewer writes per RCPT)

log = get_logger("smtpd")


@dataclass(frozen=True)
class GreylistSettings:
    enabled: bool = False  # for domains and tenants that do not say
    delay: float = 300.0
    retry_window: float = 2 * 86400.0
    max_age: float = 35 * 86400.0
    auto_allow_clients: int = 5
    exempt: list[Network] = field(default_factory=lambda: parse_networks(["127.0.0.0/8", "::1/128"]))

    @classmethod
    def from_config(cls, cfg: Config) -> GreylistSettings:
        return cls(enabled=cfg["mx.greylist.enabled"], delay=cfg["mx.greylist.delay"],
                   retry_window=cfg["mx.greylist.retry_window"], max_age=cfg["mx.greylist.max_age"],
                   auto_allow_clients=cfg["mx.greylist.auto_allow_clients"],
                   exempt=parse_networks(cfg["mx.greylist.exempt"]))


@dataclass(frozen=True)
class Decision:
    """``passed`` or not, why (``new``, ``early``: deferred; ``retried``, ``known``, ``client``: passed)
    and, when deferred, how many seconds are left."""

    passed: bool
    reason: str
    wait: int = 0

    def reply(self) -> Reply | None:
        if self.passed:
            return None
        return Reply(451, "4.7.1", f"Greylisted, try again in {self.wait} seconds")


def _insert_ignore(engine: Engine, table: sa.Table, **values: Any) -> sa.Executable:
    from sqlalchemy.dialects import postgresql, sqlite

    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    return dialect.insert(table).values(**values).on_conflict_do_nothing()


_BATV = re.compile(r"^prvs=[^=]*=", re.IGNORECASE)
_NUMBER = re.compile(r"\b\d+\b")


def normalize_sender(sender: str) -> str:
    """The sender as a triplet names it, as postgrey does: lowercase, without a BATV tag (``prvs=...=``)
    or a ``+extension``, and numbers in the local part as ``#``, so that a list's VERP address, different
    in each message, does not make every message a new triplet."""
    local, at, domain = sender.lower().rpartition("@")
    if not at:
        return sender.lower()
    local = _NUMBER.sub("#", _BATV.sub("", local).split("+", 1)[0])
    return f"{local}@{domain}"


class Greylist:
    """Decisions on triplets and the upkeep of the tables (see the module docstring)."""

    def __init__(self, engine: Engine, settings: GreylistSettings, *, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.settings = settings
        self.clock = clock

    def exempt(self, ip: str) -> bool:
        return in_networks(ip, self.settings.exempt)

    def check(self, ip: str, sender: str, recipient: str) -> Decision:
        """The decision for one RCPT; records the attempt. Under SQLite's WAL a read-then-write
        transaction fails at once when another worker committed in between: it is run again."""
        for attempt in range(LOCKED_ATTEMPTS):
            try:
                return self._check(ip, sender, recipient)
            except OperationalError as exc:
                if attempt == LOCKED_ATTEMPTS - 1 or "locked" not in str(exc):
                    raise
                time.sleep(0.01 * 2 ** attempt)
        raise AssertionError("unreachable")

    def _check(self, ip: str, sender: str, recipient: str) -> Decision:
        s, now, net = self.settings, self.clock(), client_network(ip)
        triplet = (net, normalize_sender(sender), recipient.lower())
        with self.engine.begin() as conn:
            if self._client_passes(conn, net, now):
                return Decision(True, "client")
            key = (greylist.c.network == triplet[0]) & (greylist.c.sender == triplet[1]) & \
                  (greylist.c.recipient == triplet[2])
            row = conn.execute(sa.select(greylist.c.first_seen, greylist.c.last_seen, greylist.c.passed)
                               .where(key)).first()
            if row is None:
                inserted = conn.execute(_insert_ignore(
                    self.engine, greylist, network=triplet[0], sender=triplet[1], recipient=triplet[2],
                    first_seen=now, last_seen=now, passed=0, expires=now + s.retry_window)).rowcount
                if inserted:
                    return Decision(False, "new", int(s.delay + 0.999))
                # Another worker stored it first: decide on its row.
                row = conn.execute(sa.select(greylist.c.first_seen, greylist.c.last_seen, greylist.c.passed)
                                   .where(key)).one()
            if row.passed:
                if now - row.last_seen >= TOUCH_EVERY:
                    conn.execute(greylist.update().where(key).values(last_seen=now, expires=now + s.max_age))
                return Decision(True, "known")
            age = now - row.first_seen
            if age > s.retry_window:  # not purged yet, but too late to count as a retry: start again
                conn.execute(greylist.update().where(key).values(first_seen=now, last_seen=now,
                                                                  expires=now + s.retry_window))
                return Decision(False, "new", int(s.delay + 0.999))
            if age < s.delay:
                conn.execute(greylist.update().where(key).values(last_seen=now))
                return Decision(False, "early", max(1, int(s.delay - age + 0.999)))
            conn.execute(greylist.update().where(key).values(passed=greylist.c.passed + 1, last_seen=now,
                                                              expires=now + s.max_age))
            self._count_pass(conn, net, now)
            return Decision(True, "retried")

    def _client_passes(self, conn: Connection, net: str, now: float) -> bool:
        row = conn.execute(sa.select(greylist_clients.c.passes, greylist_clients.c.allowed,
                                     greylist_clients.c.last_seen)
                           .where(greylist_clients.c.network == net)).first()
        if row is None:
            return False
        if row.allowed:
            return True
        auto = self.settings.auto_allow_clients
        if not auto or row.passes < auto:
            return False
        if now - row.last_seen >= TOUCH_EVERY:
            conn.execute(greylist_clients.update().where(greylist_clients.c.network == net)
                         .values(last_seen=now, expires=now + self.settings.max_age))
        return True

    def _count_pass(self, conn: Connection, net: str, now: float) -> None:
        expires = now + self.settings.max_age
        conn.execute(_insert_ignore(self.engine, greylist_clients, network=net, passes=0, allowed=False,
                                    last_seen=now, expires=expires))
        conn.execute(greylist_clients.update().where(greylist_clients.c.network == net)
                     .values(passes=greylist_clients.c.passes + 1, last_seen=now,
                             expires=sa.func.max(greylist_clients.c.expires, expires)
                             if self.engine.dialect.name == "sqlite"
                             else sa.func.greatest(greylist_clients.c.expires, expires)))

    # -- upkeep and the CLI ----------------------------------------------------------------------

    def purge(self) -> tuple[int, int]:
        """Forget expired triplets and clients: (triplets, clients) deleted."""
        now = self.clock()
        with self.engine.begin() as conn:
            t = conn.execute(greylist.delete().where(greylist.c.expires < now)).rowcount
            c = conn.execute(greylist_clients.delete().where(greylist_clients.c.expires < now)).rowcount
        return t, c

    def allow(self, ip_or_network: str, *, for_max_age: bool = False) -> str:
        """Let a client network (the /24 or /64 of an address) pass from now on (by hand: for good; with
        ``for_max_age``, as a DNSWL listing does, until ``max_age`` without mail); returns the network."""
        net = client_network(ip_or_network.split("/")[0])
        now = self.clock()
        expires = now + self.settings.max_age if for_max_age else NEVER
        with self.engine.begin() as conn:
            conn.execute(_insert_ignore(self.engine, greylist_clients, network=net, passes=0, allowed=True,
                                        last_seen=now, expires=expires))
            conn.execute(greylist_clients.update().where(
                greylist_clients.c.network == net,
                sa.or_(greylist_clients.c.allowed.is_(False), greylist_clients.c.expires < expires))
                         .values(allowed=True, expires=expires))
        return net

    def allow_dnswl(self, ip: str) -> None:
        """The screening stage's hook: a client on a DNSWL passes greylisting (logged)."""
        net = self.allow(ip, for_max_age=True)
        log.info(f"greylist: client network {net} allowlisted (DNSWL)")

    def flush(self) -> tuple[int, int]:
        """Forget every triplet and every client, allowed by hand or not."""
        with self.engine.begin() as conn:
            return (conn.execute(greylist.delete()).rowcount, conn.execute(greylist_clients.delete()).rowcount)

    def triplets(self, ip: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Triplets, most recently seen first (those of one client's network when ``ip`` is given)."""
        query = sa.select(greylist).order_by(greylist.c.last_seen.desc()).limit(limit)
        if ip is not None:
            query = query.where(greylist.c.network == client_network(ip))
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def clients(self, ip: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        query = sa.select(greylist_clients).order_by(greylist_clients.c.last_seen.desc()).limit(limit)
        if ip is not None:
            query = query.where(greylist_clients.c.network == client_network(ip))
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def client_status(self, row: dict[str, Any]) -> str:
        auto = self.settings.auto_allow_clients
        if row["allowed"]:
            return "allowed"
        return "auto-allowed" if auto and row["passes"] >= auto else "counting"


def greylist_state(cfg: Config, ip: str, engine: Engine | None = None) -> list[dict[str, Any]]:
    """What the greylist knows of ``ip``'s network: its client entry (``kind: client``) and its triplets
    (``kind: triplet``), for ``dovetail screen show IP`` and ``dovetail greylist list``."""
    from ..db import make_engine

    eng = engine if engine is not None else make_engine(cfg.database_url)
    gl = Greylist(eng, GreylistSettings.from_config(cfg))
    out: list[dict[str, Any]] = []
    for row in gl.clients(ip):
        out.append({"kind": "client", **row, "status": gl.client_status(row)})
    for row in gl.triplets(ip):
        out.append({"kind": "triplet", **row, "status": "passed" if row["passed"] else "greylisted"})
    return out
