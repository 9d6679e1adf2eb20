"""``dovetail tenant move T --to NODE``: move a tenant's mail to another mailbox node of the cluster.

Run on the target node: it pulls the Maildirs from the tenant's home over that node's transfer endpoint
(``listen.transfer``, authenticated by ``cluster.secret``), pauses deliveries for the final pass,
switches the home and has the old home set its copy aside. The move is a record in the database: run the
same command again after an interruption (even kill -9) and it carries on where it stopped;
``--status`` shows the record, ``--abort`` ends a move that has not switched yet.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn

from .context import Context, console, emit_json, emit_table, fail
from .directory_cmds import tenant_app

if TYPE_CHECKING:
    from ..directory.moves import MoveStore


def _row(move) -> dict:  # noqa: ANN001
    return {"id": move.id, "tenant": move.tenant, "from": move.source, "to": move.target, "state": move.state,
            "files": move.files, "bytes": move.bytes, "note": move.note}


@tenant_app.command("move")
def tenant_move(ctx: typer.Context,
                tenant: Annotated[str | None, typer.Argument(help="The tenant (optional with --purge-moved).")] = None,
                to: Annotated[str | None, typer.Option("--to", help="The mailbox node to move the tenant to "
                                                                    "(run this command on that node).")] = None,
                status: Annotated[bool, typer.Option("--status", help="Show the tenant's moves.")] = False,
                abort: Annotated[bool, typer.Option(
                    "--abort", help="End an unfinished move that has not switched: the tenant stays, "
                                    "unpaused.")] = False,
                purge_moved: Annotated[bool, typer.Option(
                    "--purge-moved", help="On an old home: delete the copies moves set aside in "
                                          "mail/.moved-away/ (of TENANT only, if given).")] = False,
                older_than: Annotated[float, typer.Option(
                    "--older-than", min=0, help="With --purge-moved: only copies of moves finished more than "
                                                "this many days ago.")] = 7.0,
                as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Move TENANT's mail to node --to, keeping UIDs, flags and keywords; resumes an interrupted move."""
    from ..directory.moves import MoveError, MoveStore
    from ..move.mover import Mover, discard_staging

    c: Context = ctx.obj
    store = MoveStore(c.engine)
    if purge_moved:
        _purge(c, store, tenant, older_than, as_json)
        return
    if tenant is None:
        fail("give TENANT (or --purge-moved)")
    try:
        if status:
            rows = [_row(m) for m in store.history(tenant)]
            if as_json:
                emit_json(rows)
            elif not rows:
                print(f"tenant {tenant} has not been moved")
            else:
                emit_table(["id", "from", "to", "state", "files", "bytes", "note"],
                           [[r["id"], r["from"], r["to"], r["state"], r["files"], r["bytes"], r["note"]] for r in rows])
            return
        if abort:
            move = store.abort(tenant)
            discard_staging(c.layout.mail, move.tenant)
            emit_json(_row(move)) if as_json else print(f"move {move.id} of {move.tenant} aborted: "
                                                       f"it stays on node {move.source}")
            return
        if not to:
            fail("give --to NODE (or --status, --abort)")
        mover = Mover(c.engine, c.layout.mail, str(c.config["node.name"]), str(c.config["cluster.secret"]),
                      settle=float(c.config["directory.cache_check_interval"]) + 1.0)
        with Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), MofNCompleteColumn(),
                      console=console, transient=True, disable=as_json) as progress:
            tasks: dict[str, object] = {}

            def show(phase: str, done: int, total: int, size: int) -> None:
                if phase not in tasks:
                    tasks[phase] = progress.add_task(f"{tenant}: {phase}", total=max(total, 1))
                progress.update(tasks[phase], completed=done if total else 1)  # type: ignore[arg-type]

            mover.progress = show
            move = mover.run(tenant, to)
    except MoveError as exc:
        fail(str(exc))
    if as_json:
        emit_json(_row(move))
    else:
        print(f"tenant {move.tenant} moved from node {move.source} to node {move.target}"
              + (f" ({move.note})" if move.note else ""))


def _purge(c: Context, store: MoveStore, tenant: str | None, older_than: float, as_json: bool) -> None:
    from ..move.purge import purge_moved

    removed, kept = purge_moved(c.layout.mail, store, older_than_days=older_than, tenant=tenant)
    if as_json:
        emit_json({"removed": [{"path": str(r.path), "tenant": r.tenant, "move": r.move_id, "bytes": r.size}
                               for r in removed],
                   "kept": [{"path": str(k.path), "tenant": k.tenant, "move": k.move_id, "bytes": k.size}
                            for k in kept]})
        return
    for r in removed:
        print(f"removed {r.path} ({r.size} bytes, move {r.move_id} of {r.tenant})")
    for k in kept:
        why = "younger" if k.finished_at is not None else "its move is not a finished one"
        print(f"kept {k.path} ({why}; --older-than {older_than:g} days)")
    if not removed and not kept:
        print("no copies set aside by moves on this node")


def register(app: typer.Typer) -> None:
    """Nothing to add: the verb hangs on ``tenant``'s group, which ``directory_cmds`` registers."""
