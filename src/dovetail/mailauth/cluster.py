"""The failure ledger and connection slots of a cluster: rows in the shared PostgreSQL database.

Nodes that share a PostgreSQL directory count failed logins and open connections there, so the
penalty and the per-user/per-IP limits hold for the cluster, not per node. A slot row names its node
and worker pid; a node can only tell whether its own pids live, so it clears its own dead workers'
rows (at worker start and when a key is full), and a node that is gone for good is cleared by
``dovetail node remove``. Taking a slot serialises on an advisory lock of the key, so two nodes
cannot both take the last one.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Engine

from .schema import auth_failures, connection_slots
from .slots import Slots, _alive, shared_slots

PRUNE_EVERY = 256


def _text(key: str) -> str:
    """A key as PostgreSQL can store it (no NUL) and as the column holds it (400 characters)."""
    return key.replace("\0", "\\0")[:400]


def shares_counters(engine: Engine | None) -> bool:
    """Whether the database is a cluster's (PostgreSQL): counters then live in it, not in ``run/``."""
    return engine is not None and engine.dialect.name == "postgresql"


class DbLedger:
    """A :class:`~dovetail.mailauth.penalty.FailureLedger` in the shared database."""

    def __init__(self, engine: Engine, window: float) -> None:
        self.engine = engine
        self.window = window
        self._adds = 0
        self._lock = threading.Lock()

    def count(self, key: str, since: float) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(auth_failures).where(
                auth_failures.c.key == _text(key), auth_failures.c.at >= since)).scalar_one())

    def add(self, keys: tuple[str, ...], now: float, keep: int) -> None:
        with self._lock:
            self._adds += 1
            prune = self._adds % PRUNE_EVERY == 0
        with self.engine.begin() as conn:
            conn.execute(auth_failures.insert(), [{"key": _text(k), "at": now} for k in keys])
            if prune:
                conn.execute(auth_failures.delete().where(auth_failures.c.at < now - self.window))

    def clear(self, keys: tuple[str, ...]) -> None:
        with self.engine.begin() as conn:
            conn.execute(auth_failures.delete().where(auth_failures.c.key.in_([_text(k) for k in keys])))


class DbSlots:
    """:class:`~dovetail.mailauth.slots.Slots` of one service, counted across the cluster."""

    def __init__(self, engine: Engine, service: str, node: str, pid: int | None = None) -> None:
        self.engine = engine
        self.service = service
        self.node = node or "-"
        self.pid = pid if pid is not None else os.getpid()
        with self.engine.begin() as conn:
            conn.execute(connection_slots.delete().where(*self._mine(), connection_slots.c.pid == self.pid))
            self._forget_dead(conn)

    def _mine(self) -> tuple[sa.ColumnElement[bool], ...]:
        return connection_slots.c.service == self.service, connection_slots.c.node == self.node

    def _forget_dead(self, conn: sa.Connection) -> int:
        pids = conn.execute(sa.select(connection_slots.c.pid).where(*self._mine()).distinct()).scalars().all()
        dead = [pid for pid in pids if pid != self.pid and not _alive(pid)]
        if dead:
            conn.execute(connection_slots.delete().where(*self._mine(), connection_slots.c.pid.in_(dead)))
        return len(dead)

    def _used(self, conn: sa.Connection, key: str) -> int:
        return int(conn.execute(sa.select(sa.func.coalesce(sa.func.sum(connection_slots.c.n), 0)).where(
            connection_slots.c.service == self.service, connection_slots.c.key == key)).scalar_one())

    def acquire(self, key: str, limit: int) -> bool:
        key = _text(key)
        with self.engine.begin() as conn:
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(f"{self.service} {key}"))))
            if self._used(conn, key) >= limit and not (self._forget_dead(conn) and self._used(conn, key) < limit):
                return False
            stmt = pg_insert(connection_slots).values(service=self.service, key=key, node=self.node, pid=self.pid, n=1)
            conn.execute(stmt.on_conflict_do_update(index_elements=["service", "key", "node", "pid"],
                                                    set_={"n": connection_slots.c.n + 1}))
            return True

    def release(self, *keys: str) -> None:
        with self.engine.begin() as conn:
            for key in keys:
                where = (*self._mine(), connection_slots.c.key == _text(key), connection_slots.c.pid == self.pid)
                conn.execute(connection_slots.update().where(*where).values(n=connection_slots.c.n - 1))
                conn.execute(connection_slots.delete().where(*where, connection_slots.c.n <= 0))

    def close(self) -> None:
        """Give back every slot this worker holds (a clean stop)."""
        with self.engine.begin() as conn:
            conn.execute(connection_slots.delete().where(*self._mine(), connection_slots.c.pid == self.pid))


def counted_slots(run_dir: Path, service: str, engine: Engine | None = None, node: str = "") -> Slots:
    """The connection slots of ``service``: across the nodes with a cluster's PostgreSQL ``engine``,
    else across the workers through ``run_dir`` (:func:`~dovetail.mailauth.slots.shared_slots`)."""
    if shares_counters(engine):
        assert engine is not None
        return DbSlots(engine, service, node)
    return shared_slots(run_dir, service)


def forget_node(engine: Engine, node: str) -> int:
    """Drop the slot rows of a node that is gone (``dovetail node remove``); returns how many."""
    with engine.begin() as conn:
        return conn.execute(connection_slots.delete().where(connection_slots.c.node == node)).rowcount
