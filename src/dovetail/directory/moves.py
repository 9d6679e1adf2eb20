"""Move records: a tenant's move between mailbox nodes as a state machine in the shared database.

``copying`` (Maildirs pulled while mail still flows to the old home) → ``final-sync`` (the tenant is
paused: deliveries get 4.2.0 and wait in the senders' queues, IMAP logins are refused; a last pass copies
what changed) → ``switched`` (the home changed, in the same transaction that unpauses the tenant) →
``cleaned`` (the old home set its copy aside). ``aborted`` ends a move that never switched. Each step is
one transaction, so a mover killed at any point finds the record where it stopped and carries on from
there; the Maildir copy it pulls is idempotent, so a repeated pass only costs time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from .addresses import AddressError, normalize_tenant
from .nodes import Node, NodeStore
from .schema import directory_state, tenant_moves, tenants

MOVE_STATES = ("copying", "final-sync", "switched", "cleaned", "aborted")
FINISHED = ("cleaned", "aborted")


class MoveError(ValueError):
    """A refused move (unknown tenant or node, a draining or the same node, another move unfinished)."""


@dataclass(frozen=True)
class Move:
    id: int
    tenant: str
    source: str
    target: str
    state: str
    started_at: float
    updated_at: float
    files: int = 0
    bytes: int = 0
    note: str = ""

    @property
    def finished(self) -> bool:
        return self.state in FINISHED


def _move(row: sa.Row) -> Move:
    return Move(**row._mapping)


def _bump(conn: Connection) -> None:
    # The pause and the new home are routing: resolver caches in every process must drop what they hold.
    conn.execute(directory_state.update().values(generation=directory_state.c.generation + 1))


class MoveStore:
    """Starts, advances and lists tenant moves."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.nodes = NodeStore(engine)

    def _tenant(self, conn: Connection, tenant: str) -> sa.Row:
        try:
            key = normalize_tenant(tenant)
        except AddressError:
            key = None
        row = conn.execute(sa.select(tenants.c.id, tenants.c.name, tenants.c.home_node, tenants.c.paused)
                           .where(tenants.c.name == key)).first() if key else None
        if row is None:
            raise MoveError(f"no such tenant {tenant!r}")
        return row

    def unfinished(self, tenant: str, conn: Connection | None = None) -> Move | None:
        """The tenant's move that has not reached ``cleaned`` or ``aborted``, if any."""
        query = (sa.select(tenant_moves).where(tenant_moves.c.tenant == normalize_tenant(tenant),
                                               tenant_moves.c.state.not_in(FINISHED))
                 .order_by(tenant_moves.c.id.desc()))
        if conn is not None:
            row = conn.execute(query).first()
        else:
            with self.engine.connect() as c:
                row = c.execute(query).first()
        return _move(row) if row else None

    def pending(self) -> list[Move]:
        """Every move not ``cleaned`` or ``aborted``, oldest first (what an interruption left undone)."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(tenant_moves).where(tenant_moves.c.state.not_in(FINISHED))
                                .order_by(tenant_moves.c.id)).all()
        return [_move(r) for r in rows]

    def history(self, tenant: str) -> list[Move]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(tenant_moves).where(tenant_moves.c.tenant == normalize_tenant(tenant))
                                .order_by(tenant_moves.c.id))
            return [_move(r) for r in rows]

    def get(self, move_id: int) -> Move:
        with self.engine.connect() as conn:
            return _move(conn.execute(sa.select(tenant_moves).where(tenant_moves.c.id == move_id)).one())

    def find(self, move_id: int) -> Move | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(tenant_moves).where(tenant_moves.c.id == move_id)).first()
        return _move(row) if row else None

    def check_target(self, tenant: str, target: str) -> tuple[Move | None, str, Node, Node]:
        """``(unfinished move to resume or None, tenant name, source node, target node)`` or MoveError."""
        with self.engine.connect() as conn:
            row = self._tenant(conn, tenant)
            move = self.unfinished(row.name, conn)
        if move is not None:
            if move.target != target.strip().lower():
                raise MoveError(f"tenant {row.name} has an unfinished move to node {move.target} "
                                f"({move.state}): resume it with --to {move.target}, or --abort it")
            source, dest = self.nodes.get(move.source), self.nodes.get(move.target)
            if source is None or dest is None:
                raise MoveError(f"the nodes of move {move.id} ({move.source} → {move.target}) are gone")
            return move, row.name, source, dest
        dest = self.nodes.get(target)
        if dest is None:
            raise MoveError(f"no such node {target!r}")
        if "mailbox" not in dest.roles:
            raise MoveError(f"node {dest.name} has no mailbox role: it cannot hold a tenant's mail")
        if dest.state != "active":
            raise MoveError(f"node {dest.name} is draining: it takes no tenants")
        if row.home_node is None:
            raise MoveError(f"tenant {row.name} has no home node (a single installation): nothing to move from")
        if row.home_node == dest.name:
            raise MoveError(f"tenant {row.name} is already homed on node {dest.name}")
        source = self.nodes.get(row.home_node)
        if source is None:
            raise MoveError(f"tenant {row.name} is homed on node {row.home_node}, which is not in the node list")
        if not source.transfer:
            raise MoveError(f"node {source.name} has no transfer address: "
                            f"add it with `dovetail node add ... --transfer host:port` (its listen.transfer)")
        return None, row.name, source, dest

    def begin(self, tenant: str, source: str, target: str) -> Move:
        """A new move record in ``copying``; refused when the tenant moved or began moving meanwhile."""
        now = time.time()
        with self.engine.begin() as conn:
            row = self._tenant(conn, tenant)
            if row.home_node != source or self.unfinished(row.name, conn) is not None:
                raise MoveError(f"tenant {row.name} changed meanwhile (another move?): try again")
            key = conn.execute(tenant_moves.insert().values(
                tenant=row.name, source=source, target=target, state="copying", started_at=now,
                updated_at=now)).inserted_primary_key
        assert key is not None
        return self.get(int(key[0]))

    def _advance(self, conn: Connection, move: Move, expected: str, state: str, **values: object) -> None:
        done = conn.execute(tenant_moves.update()
                            .where(tenant_moves.c.id == move.id, tenant_moves.c.state == expected)
                            .values(state=state, updated_at=time.time(), **values))
        if not done.rowcount:
            raise MoveError(f"move {move.id} of {move.tenant} is no longer {expected} (changed by another run?)")

    def record(self, move: Move, *, files: int, size: int, note: str = "") -> None:
        """Progress of a pass (for ``--status``)."""
        with self.engine.begin() as conn:
            conn.execute(tenant_moves.update().where(tenant_moves.c.id == move.id)
                         .values(files=files, bytes=size, note=note, updated_at=time.time()))

    def pause(self, move: Move) -> Move:
        """``copying`` → ``final-sync``: deliveries to the tenant wait from now on."""
        with self.engine.begin() as conn:
            self._advance(conn, move, "copying", "final-sync")
            conn.execute(tenants.update().where(tenants.c.name == move.tenant).values(paused=True))
            _bump(conn)
        return self.get(move.id)

    def switch(self, move: Move) -> Move:
        """``final-sync`` → ``switched``: the new home, unpaused, in one transaction."""
        with self.engine.begin() as conn:
            row = self._tenant(conn, move.tenant)
            if row.home_node != move.source:
                raise MoveError(f"tenant {move.tenant} is homed on {row.home_node}, not {move.source}: "
                                "its home changed outside this move")
            self._advance(conn, move, "final-sync", "switched")
            conn.execute(tenants.update().where(tenants.c.name == move.tenant)
                         .values(home_node=move.target, paused=False, moved_from=move.source))
            _bump(conn)
        return self.get(move.id)

    def cleaned(self, move: Move, note: str) -> Move:
        with self.engine.begin() as conn:
            self._advance(conn, move, "switched", "cleaned", note=note)
        return self.get(move.id)

    def abort(self, tenant: str) -> Move:
        """End an unfinished move that has not switched: the tenant stays where it is, unpaused."""
        with self.engine.begin() as conn:
            row = self._tenant(conn, tenant)
            move = self.unfinished(row.name, conn)
            if move is None:
                raise MoveError(f"tenant {row.name} has no unfinished move")
            if move.state not in ("copying", "final-sync"):
                raise MoveError(f"move {move.id} of {row.name} has switched already: finish it with "
                                f"`dovetail tenant move {row.name} --to {move.target}`")
            self._advance(conn, move, move.state, "aborted", note="aborted by the operator")
            conn.execute(tenants.update().where(tenants.c.name == row.name).values(paused=False))
            _bump(conn)
        return self.get(move.id)
