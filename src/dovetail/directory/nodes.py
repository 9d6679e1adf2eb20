"""The cluster's node list and tenant placement: which node holds a tenant's Maildirs.

A node is one Dovetail installation (its own config and data directory) sharing the directory
database with the others. The list says what each node does (its roles) and where the others reach
it (its LMTP, IMAP and transfer addresses); a tenant's ``home_node`` says which mailbox node holds its mail, so
an MX node knows where to hand a message over and a front end where to proxy a login. A single
installation has no nodes at all and every tenant's home is the local data directory.

Placement happens once, when a tenant is created: the node given, or the active mailbox node with
the fewest tenants (ties by name). Draining a node stops new placements there; removing one is
refused while tenants still live on it, since their Maildirs would be orphaned.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from .schema import directory_state, nodes, tenants

NODE_ROLES = ("mailbox", "mx", "replies", "submission", "web")
NODE_STATES = ("active", "draining")
_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9.-]{0,62})$")
_ADDRESS = re.compile(r"^(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$")


class NodeError(ValueError):
    """A refused change to the node list (unknown node, bad role or address, tenants still homed)."""


@dataclass(frozen=True)
class Node:
    name: str
    roles: tuple[str, ...]
    lmtp: str | None
    imap: str | None
    state: str
    tenants: int = 0
    transfer: str | None = None  # host:port of its transfer endpoint: where a tenant move pulls Maildirs from

    @property
    def takes_tenants(self) -> bool:
        """New tenants may be placed here."""
        return self.state == "active" and "mailbox" in self.roles


def check_node_name(name: str) -> str:
    """A node name: lowercase letters, digits, dots and dashes (a host name fits), at most 63 characters."""
    value = (name or "").strip().lower()
    if not _NAME.match(value) or value.endswith((".", "-")):
        raise NodeError(f"node name {name!r}: use lowercase letters, digits, '.' and '-' (at most 63)")
    return value


def parse_roles(text: str) -> tuple[str, ...]:
    """``mx,mailbox`` → ``("mailbox", "mx")``; an unknown or missing role is refused."""
    roles = sorted({r.strip().lower() for r in (text or "").split(",") if r.strip()})
    unknown = [r for r in roles if r not in NODE_ROLES]
    if unknown or not roles:
        raise NodeError(f"roles {text!r}: give one or more of {', '.join(NODE_ROLES)}")
    return tuple(roles)


def check_address(kind: str, value: str | None) -> str | None:
    """``host:port`` (IPv6 in brackets) with a port in 1..65535, or None."""
    if value is None or value == "":
        return None
    if not _ADDRESS.match(value) or not 0 < int(value.rsplit(":", 1)[1]) < 65536:
        raise NodeError(f"{kind} address {value!r}: expected host:port, e.g. 10.0.0.2:24")
    return value


def _row(r: sa.Row) -> Node:
    m = r._mapping
    return Node(name=m["name"], roles=tuple(m["roles"].split(",")), lmtp=m["lmtp"], imap=m["imap"],
                state=m["state"], tenants=int(m["tenants"]), transfer=m["transfer"])


def _select() -> sa.Select:
    homed = (sa.select(sa.func.count()).select_from(tenants)
             .where(tenants.c.home_node == nodes.c.name).scalar_subquery())
    return sa.select(nodes.c.name, nodes.c.roles, nodes.c.lmtp, nodes.c.imap, nodes.c.state,
                     homed.label("tenants"), nodes.c.transfer)


def _bump(conn: Connection) -> None:
    # Placement is part of routing: resolver caches in other processes must see the change.
    conn.execute(directory_state.update().values(generation=directory_state.c.generation + 1))


class NodeStore:
    """Writes and listings of the node list, and the placement rule for new tenants."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(self, name: str, roles: str, *, lmtp: str | None = None, imap: str | None = None,
            transfer: str | None = None) -> Node:
        name = check_node_name(name)
        parsed = parse_roles(roles)
        lmtp = check_address("lmtp", lmtp)
        imap = check_address("imap", imap)
        transfer = check_address("transfer", transfer)
        if "mailbox" in parsed and not lmtp:
            raise NodeError(f"node {name}: a mailbox node needs --lmtp host:port (where mail is handed to it)")
        with self.engine.begin() as conn:
            if conn.execute(sa.select(nodes.c.id).where(nodes.c.name == name)).first():
                raise NodeError(f"node {name!r} already exists")
            conn.execute(nodes.insert().values(name=name, roles=",".join(parsed), lmtp=lmtp, imap=imap,
                                               transfer=transfer))
            _bump(conn)
        return self.get(name)  # type: ignore[return-value]

    def get(self, name: str) -> Node | None:
        with self.engine.connect() as conn:
            row = conn.execute(_select().where(nodes.c.name == name.strip().lower())).first()
        return _row(row) if row else None

    def list(self) -> list[Node]:
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(_select().order_by(nodes.c.name))]

    def set_state(self, name: str, state: str) -> Node:
        if state not in NODE_STATES:
            raise NodeError(f"state {state!r}: one of {', '.join(NODE_STATES)}")
        with self.engine.begin() as conn:
            done = conn.execute(nodes.update().where(nodes.c.name == name.strip().lower()).values(state=state))
            if not done.rowcount:
                raise NodeError(f"no such node {name!r}")
            _bump(conn)
        return self.get(name)  # type: ignore[return-value]

    def remove(self, name: str) -> None:
        """Delete a node; refused while tenants are homed on it (their Maildirs live there)."""
        key = name.strip().lower()
        with self.engine.begin() as conn:
            if not conn.execute(sa.select(nodes.c.id).where(nodes.c.name == key)).first():
                raise NodeError(f"no such node {name!r}")
            homed = list(conn.execute(sa.select(tenants.c.name).where(tenants.c.home_node == key)
                                      .order_by(tenants.c.name)).scalars())
            if homed:
                shown = ", ".join(homed[:5]) + (", ..." if len(homed) > 5 else "")
                raise NodeError(f"node {key} is the home of {len(homed)} tenant(s) ({shown}); "
                                "move their mail and their home first")
            conn.execute(nodes.delete().where(nodes.c.name == key))
            _bump(conn)


def place(conn: Connection, wanted: str | None) -> str | None:
    """The home node for a new tenant, chosen inside the caller's transaction.

    ``wanted`` must name an active mailbox node. Without it: the active mailbox node with the fewest
    tenants, or None when the cluster has no mailbox nodes (a single installation).
    """
    rows = [_row(r) for r in conn.execute(_select().order_by(nodes.c.name))]
    if wanted is not None:
        key = wanted.strip().lower()
        node = next((n for n in rows if n.name == key), None)
        if node is None:
            raise NodeError(f"no such node {wanted!r}")
        if not node.takes_tenants:
            raise NodeError(f"node {key} takes no new tenants "
                            f"({'draining' if node.state != 'active' else 'no mailbox role'})")
        return node.name
    candidates = [n for n in rows if n.takes_tenants]
    if not candidates:
        if any("mailbox" in n.roles for n in rows):
            raise NodeError("every mailbox node is draining: no node can take a new tenant")
        return None
    return min(candidates, key=lambda n: (n.tenants, n.name)).name
