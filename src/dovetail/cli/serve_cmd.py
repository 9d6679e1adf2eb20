"""``dovetail serve``: start the services that exist, on the configured listen addresses."""

from __future__ import annotations

from typing import Annotated

import typer

from ..config import ConfigError, parse_hostport, parse_listen
from .context import Context


def _addr(name: str, value: str | None, parse=parse_hostport) -> str | None:  # noqa: ANN001
    if value is None:
        return None
    try:
        return parse(value)
    except ValueError as exc:
        raise ConfigError(f"--{name}", value, str(exc)) from None


def serve(ctx: typer.Context,
          smtp: Annotated[str | None, typer.Option("--smtp", help="HOST:PORT of the MX listener")] = None,
          submission: Annotated[str | None, typer.Option("--submission", help="HOST:PORT")] = None,
          imap: Annotated[str | None, typer.Option("--imap", help="HOST:PORT")] = None,
          http: Annotated[str | None, typer.Option("--http", help="HOST:PORT of the web admin/API")] = None,
          lmtp: Annotated[str | None, typer.Option("--lmtp", help="HOST:PORT or unix:/PATH of the LMTP listener")]
          = None) -> None:
    """Run Dovetail in the foreground until SIGTERM/SIGINT."""
    from ..serve import run

    c: Context = ctx.obj
    overrides = {k: v for k, v in {"listen.smtp": _addr("smtp", smtp), "listen.submission": _addr("submission",
                 submission), "listen.imap": _addr("imap", imap), "listen.http": _addr("http", http),
                 "listen.lmtp": _addr("lmtp", lmtp, parse_listen)}.items()
                 if v is not None}
    cfg = c.config
    cfg.overrides = overrides
    cfg.values.update(overrides)
    raise typer.Exit(run(cfg))


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
