"""The ``dovetail`` command: global options, then one verb group per module."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import click
import typer
from rich.markup import escape

from .. import config as config_mod
from ..datadir import default_data_dir
from . import config_cmds, directory_cmds, master_cmds, queue_cmds, serve_cmd
from .context import CliError, Context, err_console

app = typer.Typer(
    name="dovetail",
    help="Dovetail: multi-tenant mail platform (MX, IMAP, outbound, replies engine).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _global(
    ctx: typer.Context,
    data_dir: Annotated[Path, typer.Option(
        "--data-dir", envvar="DOVETAIL_DATA_DIR", help="Data directory (env DOVETAIL_DATA_DIR).",
        show_default="./dovetail-data")] = None,  # type: ignore[assignment]
) -> None:
    ctx.obj = Context(data_dir=data_dir or default_data_dir())


@app.command()
def init(ctx: typer.Context) -> None:
    """Create the data directory: config, database, TLS certificate, queue and mail folders."""
    from ..datadir import init as do_init

    c: Context = ctx.obj
    created = do_init(c.data_dir)
    for path in created:
        print(f"created {path}")
    print(f"{c.data_dir} is ready" + ("" if created else " (nothing to do)"))


config_cmds.register(app)
directory_cmds.register(app)
serve_cmd.register(app)
master_cmds.register(app)
queue_cmds.register(app)


def _register_service_verbs() -> None:
    """Verb groups of the web admin, the replies engine and outbound."""
    from . import outbound_cmds, replies_cmds, web_cmds

    for module in (web_cmds, replies_cmds, outbound_cmds):
        module.register(app)


_register_service_verbs()


def main(argv: list[str] | None = None) -> int:
    """Entry point: operator mistakes print one clear line and exit 2, never a traceback."""
    from ..directory import AddressError, DirectoryError

    try:
        rc = app(args=argv, standalone_mode=False)
    except (CliError, DirectoryError, AddressError, config_mod.ConfigError) as exc:
        err_console.print(f"[red]dovetail: error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 2
    except click.exceptions.Abort:
        err_console.print("aborted")
        return 1
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return 2
    return rc if isinstance(rc, int) else 0


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
