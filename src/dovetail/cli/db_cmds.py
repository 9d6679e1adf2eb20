"""``dovetail db copy``: take a single node's database into the cluster's PostgreSQL.

Run on the node that has the data, with the services stopped (as one stops Postfix before moving its
tables): everything of the configured database (``database.url``) is copied into ``--to``, then
``dovetail config set database.url=...`` points the node at it.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn

from .context import Context, emit_json, err_console, fail

db_app = typer.Typer(help="The node's database: copy it into the cluster's PostgreSQL.", no_args_is_help=True)


@db_app.command("copy")
def db_copy(ctx: typer.Context,
            to: Annotated[str, typer.Option("--to", help="URL of the target database (an empty one), e.g. "
                                                         "postgresql://dovetail:PASSWORD@10.0.0.10/dovetail")],
            as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Copy every table of this node's database into an empty database, in one transaction."""
    from sqlalchemy.exc import SQLAlchemyError

    from ..db import make_engine, require_driver
    from ..dbcopy import CopyError, copy_database

    c: Context = ctx.obj
    try:
        require_driver(to)
        target = make_engine(to)
    except (ValueError, RuntimeError, SQLAlchemyError) as exc:
        fail(f"--to: {exc}")
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), MofNCompleteColumn(),
                      console=err_console, transient=True, disable=as_json) as progress:
            tasks: dict[str, object] = {}

            def show(table: str, done: int, total: int) -> None:
                if table not in tasks:
                    tasks[table] = progress.add_task(table, total=max(total, 1))
                progress.update(tasks[table], completed=done if total else 1)  # type: ignore[arg-type]

            copied = copy_database(c.engine, target, show)
    except CopyError as exc:
        fail(str(exc))
    except SQLAlchemyError as exc:
        fail(f"copy failed, nothing was written to the target: {str(exc).splitlines()[0]}")
    finally:
        target.dispose()
    if as_json:
        emit_json({"tables": copied, "rows": sum(copied.values())})
        return
    print(f"copied {sum(copied.values())} rows in {len(copied)} tables; now point this node at it: "
          f"dovetail config set database.url=<the --to URL>")


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")
