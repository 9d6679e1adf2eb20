"""``dovetail greylist``: the MX's greylist triplets and client networks (list, allow by hand, flush)."""

from __future__ import annotations

import ipaddress
import time
from typing import Annotated, Any

import typer

from .context import Context, emit_json, emit_table, fail

greylist_app = typer.Typer(help="Greylisting at the MX: triplets (network, sender, recipient) and clients.",
                           no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _greylist(c: Context):  # noqa: ANN202 - avoids importing SQLAlchemy-heavy modules for every verb
    from ..intake.greylist import Greylist, GreylistSettings

    return Greylist(c.engine, GreylistSettings.from_config(c.config))


def _address(text: str) -> str:
    try:
        return str(ipaddress.ip_network(text.strip(), strict=False).network_address) if "/" in text \
            else str(ipaddress.ip_address(text.strip()))
    except ValueError:
        fail(f"{text!r} is not an IP address or network")


def _when(ts: float) -> str:
    if ts >= 9.0e15:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


@greylist_app.command("list")
def greylist_list(ctx: typer.Context,
                  ip: Annotated[str | None, typer.Argument(help="Only the network of this client address.")] = None,
                  limit: Annotated[int, typer.Option("--limit", min=1)] = 100,
                  as_json: JsonOpt = False) -> None:
    """Clients and triplets, most recently seen first."""
    gl = _greylist(ctx.obj)
    addr = _address(ip) if ip is not None else None
    clients = [{**r, "status": gl.client_status(r)} for r in gl.clients(addr, limit)]
    triplets = [{**r, "status": "passed" if r["passed"] else "greylisted"} for r in gl.triplets(addr, limit)]
    if as_json:
        emit_json({"clients": clients, "triplets": triplets})
        return
    emit_table(["client network", "status", "passes", "last seen", "expires"],
               [[r["network"], r["status"], r["passes"], _when(r["last_seen"]), _when(r["expires"])] for r in clients],
               title="clients")
    emit_table(["network", "sender", "recipient", "status", "first seen", "expires"],
               [[r["network"], r["sender"] or "<>", r["recipient"], r["status"], _when(r["first_seen"]),
                 _when(r["expires"])] for r in triplets], title="triplets")


@greylist_app.command("allow")
def greylist_allow(ctx: typer.Context, ip: Annotated[str, typer.Argument(help="A client address or network.")],
                   as_json: JsonOpt = False) -> None:
    """Let the client's network (/24 or /64) pass greylisting from now on."""
    net = _greylist(ctx.obj).allow(_address(ip))
    emit_json({"allowed": net}) if as_json else print(f"greylisting: {net} allowed")


@greylist_app.command("flush")
def greylist_flush(ctx: typer.Context,
                   expired: Annotated[bool, typer.Option("--expired", help="Only what has expired.")] = False,
                   as_json: JsonOpt = False) -> None:
    """Forget every triplet and client (with --expired: only those past their expiry)."""
    gl = _greylist(ctx.obj)
    triplets, clients = gl.purge() if expired else gl.flush()
    out: dict[str, Any] = {"triplets": triplets, "clients": clients}
    emit_json(out) if as_json else print(f"greylist flushed: {triplets} triplets, {clients} clients")


def register(app: typer.Typer) -> None:
    app.add_typer(greylist_app, name="greylist")
