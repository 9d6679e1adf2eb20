"""The ``dovetail`` command: global options, then one verb group per module."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import click
import typer
import typer.core
from rich.markup import escape

from .. import config as config_mod
from ..datadir import default_data_dir
from . import (
    config_cmds,
    db_cmds,
    directory_cmds,
    master_cmds,
    move_cmds,
    node_cmds,
    queue_cmds,
    screen_cmds,
    serve_cmd,
)
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
move_cmds.register(app)  # `tenant move`, on the tenant group
node_cmds.register(app)
db_cmds.register(app)
serve_cmd.register(app)
master_cmds.register(app)
queue_cmds.register(app)
screen_cmds.register(app)


def _register_service_verbs() -> None:
    """Verb groups of the web admin, the replies engine, outbound, certificates, reports and the greylist."""
    from . import cert_cmds, greylist_cmds, outbound_cmds, replies_cmds, reports_cmds, web_cmds

    for module in (web_cmds, replies_cmds, outbound_cmds, cert_cmds, reports_cmds, greylist_cmds):
        module.register(app)


_register_service_verbs()


# Typer 0.26 and later carry their own copy of Click (``typer._click``) and raise its exceptions; earlier
# releases raise Click's. Whichever this Typer uses is the one to catch.
_click = getattr(typer.core, "_click", click)
_NoArgsIsHelp = getattr(_click.exceptions, "NoArgsIsHelpError", ())


def _usage_line(exc: Exception) -> str:
    """Click's usage error as one line: ``dovetail: queue show: missing argument QUEUE_ID (see … --help)``."""
    ctx = getattr(exc, "ctx", None)
    message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    param = getattr(exc, "param", None)
    if isinstance(exc, _click.exceptions.MissingParameter) and ctx is not None and param is not None \
            and getattr(param, "param_type_name", "") == "argument":
        message = f"missing argument {(param.name or '').upper()}"  # as the usage line names it
    message = " ".join(message.split()).rstrip(".")
    message = message[:1].lower() + message[1:]
    if ctx is None:
        return f"dovetail: {message}"
    path = ctx.command_path
    where = path.partition(" ")[2]
    return f"dovetail: {where + ': ' if where else ''}{message} (see {path} --help)"


def main(argv: list[str] | None = None) -> int:
    """Entry point: operator mistakes print one clear line on stderr and exit 2, never a traceback."""
    from ..directory import AddressError, DirectoryError

    try:
        rc = app(args=argv, prog_name="dovetail", standalone_mode=False)
    except (CliError, DirectoryError, AddressError, config_mod.ConfigError) as exc:
        err_console.print(f"[red]dovetail: error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 2
    except (click.exceptions.Abort, typer.Abort):
        err_console.print("aborted")
        return 1
    except (click.exceptions.Exit, typer.Exit) as exc:
        return exc.exit_code
    except _NoArgsIsHelp as exc:  # a group named without its verb: its help (Typer prints it with Rich)
        text = exc.format_message().strip()
        if text:
            print(text, file=sys.stderr)
        return 2
    except (click.exceptions.UsageError, _click.exceptions.UsageError) as exc:
        print(_usage_line(exc), file=sys.stderr)
        return 2
    except (click.ClickException, _click.ClickException) as exc:
        print(f"dovetail: error: {' '.join(exc.format_message().split())}", file=sys.stderr)
        return 2
    except OSError as exc:  # an unreadable data directory, a full disk: what and where, not a traceback
        where = f": {exc.filename}" if exc.filename else ""
        print(f"dovetail: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    return rc if isinstance(rc, int) else 0


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
