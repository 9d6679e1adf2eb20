"""``dovetail node``: the cluster's node list (add, list, show, drain, resume, remove).

Nodes share the directory database; each keeps its own config and data directory and names itself
with ``node.name``. Tenants are placed on a mailbox node when they are created (``tenant add --node``
or the least used one).
"""

from __future__ import annotations

from typing import Annotated

import typer

from .context import Context, emit_json, emit_table, fail

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]

node_app = typer.Typer(help="Cluster nodes: their roles, addresses and the tenants homed on them.",
                       no_args_is_help=True)


def _store(ctx: typer.Context):  # noqa: ANN202 - keeps SQLAlchemy out of every verb's import
    from ..directory.nodes import NodeStore

    c: Context = ctx.obj
    return NodeStore(c.engine)


def _json(node, here: str) -> dict:  # noqa: ANN001
    return {"name": node.name, "roles": list(node.roles), "lmtp": node.lmtp, "imap": node.imap,
            "transfer": node.transfer, "state": node.state, "tenants": node.tenants, "this_node": node.name == here}


def _here(ctx: typer.Context) -> str:
    return str(ctx.obj.config["node.name"] or "").strip().lower()


def _guard(fn):  # noqa: ANN001, ANN202
    from ..directory.nodes import NodeError

    try:
        return fn()
    except NodeError as exc:
        fail(str(exc))


@node_app.command("add")
def node_add(ctx: typer.Context, name: str,
             roles: Annotated[str, typer.Option("--roles", help="Comma-separated: mailbox, mx, replies, "
                                                                "submission, web.")],
             lmtp: Annotated[str | None, typer.Option("--lmtp", help="host:port of its LMTP server "
                                                                     "(required for mailbox nodes).")] = None,
             imap: Annotated[str | None, typer.Option("--imap", help="host:port logins are proxied to.")] = None,
             transfer: Annotated[str | None, typer.Option(
                 "--transfer", help="host:port of its transfer endpoint (listen.transfer): tenant moves "
                                    "pull a tenant's Maildirs from there.")] = None,
             as_json: JsonOpt = False) -> None:
    """Add a node to the cluster's list."""
    node = _guard(lambda: _store(ctx).add(name, roles, lmtp=lmtp, imap=imap, transfer=transfer))
    emit_json(_json(node, _here(ctx))) if as_json else print(f"node {node.name} added ({','.join(node.roles)})")


@node_app.command("list")
def node_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """The nodes, their roles, addresses, state and how many tenants each holds."""
    here = _here(ctx)
    nodes = _store(ctx).list()
    if as_json:
        emit_json([_json(n, here) for n in nodes])
        return
    if not nodes:
        print("no nodes: a single installation (every tenant's mail is in this data directory)")
        return
    emit_table(["node", "roles", "lmtp", "imap", "state", "tenants"],
               [[n.name + (" *" if n.name == here else ""), ",".join(n.roles), n.lmtp or "-", n.imap or "-",
                 n.state, n.tenants] for n in nodes])


@node_app.command("show")
def node_show(ctx: typer.Context, name: str, as_json: JsonOpt = False) -> None:
    """One node."""
    node = _store(ctx).get(name)
    if node is None:
        fail(f"no such node {name!r}")
    data = _json(node, _here(ctx))
    if as_json:
        emit_json(data)
        return
    for key, value in data.items():
        print(f"{key.replace('_', ' ')}: {', '.join(value) if isinstance(value, list) else value}")


@node_app.command("drain")
def node_drain(ctx: typer.Context, name: str, as_json: JsonOpt = False) -> None:
    """Place no new tenants on NAME (its tenants stay)."""
    node = _guard(lambda: _store(ctx).set_state(name, "draining"))
    emit_json(_json(node, _here(ctx))) if as_json else print(f"node {node.name} draining")


@node_app.command("resume")
def node_resume(ctx: typer.Context, name: str, as_json: JsonOpt = False) -> None:
    """Place new tenants on NAME again."""
    node = _guard(lambda: _store(ctx).set_state(name, "active"))
    emit_json(_json(node, _here(ctx))) if as_json else print(f"node {node.name} active")


@node_app.command("remove")
def node_remove(ctx: typer.Context, name: str, as_json: JsonOpt = False) -> None:
    """Remove NAME from the list; refused while tenants are homed on it. The connection slots its
    workers held in the cluster's counters are dropped with it."""
    from ..mailauth.cluster import forget_node, shares_counters

    _guard(lambda: _store(ctx).remove(name))
    if shares_counters(ctx.obj.engine):
        forget_node(ctx.obj.engine, name.strip().lower())
    emit_json({"removed": name}) if as_json else print(f"node {name} removed")


def register(app: typer.Typer) -> None:
    app.add_typer(node_app, name="node")
