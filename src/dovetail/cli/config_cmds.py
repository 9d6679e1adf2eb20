"""``dovetail config show|set``: like ``postconf -n`` / ``postconf -d`` / ``postconf -e``; secrets are
masked unless asked for (:mod:`dovetail.configmask`)."""

from __future__ import annotations

from typing import Annotated

import typer

from .. import config as config_mod
from ..configmask import masked
from .context import Context, emit_json, fail

config_app = typer.Typer(help="Show or change the configuration (dovetail.toml).", no_args_is_help=True)


@config_app.command("show")
def show(
    ctx: typer.Context,
    keys: Annotated[list[str] | None, typer.Argument(help="Only these keys.")] = None,
    all_: Annotated[bool, typer.Option("--all", "-a", help="Every key, defaults included (postconf -d).")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    show_secrets: Annotated[bool, typer.Option("--show-secrets", help="Print secrets (cluster.secret, "
                                               "passwords in URLs) instead of ********.")] = False,
) -> None:
    """Print the effective configuration: keys set in the file (default), or all of them."""
    c: Context = ctx.obj
    cfg = c.config
    if keys:
        for k in keys:
            if k not in cfg.values:
                fail(f"{k}: unknown key (see `dovetail config show --all`)")
        names = keys
    elif all_:
        names = list(cfg.values)
    else:
        names = [k for k in cfg.values if k in cfg.explicit]
    values = {k: cfg.values[k] for k in names}
    services: dict = {}
    if all_:
        from ..master.services import service_specs

        for name, spec in service_specs(cfg).items():
            for key, value in spec.to_dict().items():
                if key != "name":
                    services[f"services.{name}.{key}"] = list(value) if isinstance(value, tuple) else value
    elif not keys:
        services = {f"{k}.{sub}": v for k, table in cfg.extra.items() for sub, v in table.items()}
    if not show_secrets:
        values = {k: masked(k, v) for k, v in values.items()}
        services = {k: masked(k, v) for k, v in services.items()}
    if as_json:
        emit_json({**values, **services})
        return
    for k, v in values.items():
        print(f"{k} = {config_mod.render_value(v)}")
    for k, v in services.items():
        print(f"{k} = {config_mod.render_value(v)}")


@config_app.command("set")
def set_(
    ctx: typer.Context,
    assignments: Annotated[list[str], typer.Argument(help="key=value pairs, e.g. smtp.max_message_size=20M")],
) -> None:
    """Validate and write key=value pairs into dovetail.toml (comments are kept)."""
    c: Context = ctx.obj
    c.require_init()
    parsed = []
    for item in assignments:
        key, eq, value = item.partition("=")
        if not eq:
            fail(f"{item!r}: expected key=value")
        parsed.append((key.strip(), value.strip()))
    for key, value in parsed:  # validate all before writing any
        config_mod.validate(key, value)
    for key, value in parsed:
        config_mod.set_value(c.data_dir, key, value)
        print(f"{key} = {config_mod.render_value(config_mod.validate(key, value))}")


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
