"""The ``dovetail`` command: global options, then one verb group per module."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Annotated, Any

import click
import typer
import typer.core
import typer.main
from rich.markup import escape

from .. import config as config_mod
from ..datadir import default_data_dir
from .context import CliError, Context, err_console

# Each verb module and the top-level verbs its ``register`` adds, in the order ``dovetail --help``
# lists them. A module is imported when one of its verbs is named (or for the full help), not at
# every start: the replies engine, outbound and the directory cost half a second to import, and an
# operator's `dovetail queue list` needs none of them. ``move_cmds`` hangs `tenant move` on
# ``directory_cmds``' tenant group, so it loads with it.
VERB_MODULES: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("config_cmds",), ("config",)),
    (("directory_cmds", "move_cmds"), ("tenant", "domain", "mailbox", "alias", "resolve")),
    (("node_cmds",), ("node",)),
    (("db_cmds",), ("db",)),
    (("serve_cmd",), ("serve",)),
    (("master_cmds",), ("status", "stop", "reload", "log")),
    (("queue_cmds",), ("queue",)),
    (("screen_cmds",), ("screen",)),
    (("web_cmds",), ("admin", "token")),
    (("replies_cmds",), ("webhooks", "campaigns", "replies")),
    (("outbound_cmds",), ("dkim", "smtp-credentials", "transport", "dns", "send-limits")),
    (("cert_cmds",), ("cert",)),
    (("reports_cmds",), ("reports",)),
    (("greylist_cmds",), ("greylist",)),
)


def verbs_of(modules: tuple[str, ...]) -> dict[str, Any]:
    """The Click commands the verb modules register, built on an app of their own."""
    sub = typer.Typer()
    for name in modules:
        importlib.import_module(f"{__package__}.{name}").register(sub)
    return dict(typer.main.get_group(sub).commands)


class LazyVerbs(MutableMapping[str, Any]):
    """The root group's commands: the built ones, then every verb of :data:`VERB_MODULES`, whose module
    is imported the first time the verb is looked up. Listing the names imports nothing."""

    def __init__(self, built: MutableMapping[str, Any]) -> None:
        self.built = built
        self.pending = {verb: modules for modules, verbs in VERB_MODULES for verb in verbs}

    def _load(self, verb: str) -> None:
        modules = self.pending.get(verb)
        if modules is None:
            return
        for name, command in verbs_of(modules).items():
            self.built[name] = command
        for other in [v for v, m in self.pending.items() if m == modules]:
            del self.pending[other]

    def __getitem__(self, verb: str) -> Any:
        self._load(verb)
        return self.built[verb]

    def __setitem__(self, verb: str, command: Any) -> None:
        self.built[verb] = command

    def __delitem__(self, verb: str) -> None:
        self._load(verb)
        del self.built[verb]

    def __iter__(self) -> Iterator[str]:
        # A snapshot: looking a verb up while iterating (Typer's help does) loads it into ``built``.
        yield from [*self.built, *(v for v in self.pending if v not in self.built)]

    def __len__(self) -> int:
        return len(set(self.built) | set(self.pending))

    def __contains__(self, verb: object) -> bool:
        return verb in self.built or verb in self.pending


class LazyGroup(typer.core.TyperGroup):
    """The root ``dovetail`` group with :class:`LazyVerbs` for its commands."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.commands = LazyVerbs(self.commands)


app = typer.Typer(
    name="dovetail",
    help="Dovetail: multi-tenant mail platform (MX, IMAP, outbound, replies engine).",
    cls=LazyGroup,
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


def _operator_errors() -> tuple[type[Exception], ...]:
    """The errors that mean bad input. The directory's are looked up only if a verb imported the
    directory (no verb raises them otherwise), so that a start does not import it for an ``except``."""
    errors: list[type[Exception]] = [CliError, config_mod.ConfigError]
    for module, name in (("dovetail.directory.store", "DirectoryError"),
                         ("dovetail.directory.addresses", "AddressError")):
        if module in sys.modules:
            errors.append(getattr(sys.modules[module], name))
    return tuple(errors)


def main(argv: list[str] | None = None) -> int:
    """Entry point: operator mistakes print one clear line on stderr and exit 2, never a traceback."""
    try:
        rc = app(args=argv, prog_name="dovetail", standalone_mode=False)
    except _operator_errors() as exc:
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
