"""CLI verbs of the web admin: ``dovetail admin add|list`` and ``dovetail token add|list|revoke``."""

from __future__ import annotations

import getpass
import sys
from typing import Annotated

import typer

from .context import Context, console, emit_json, emit_table, fail

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]

admin_app = typer.Typer(help="Users of the web admin: admins and tenant admins.", no_args_is_help=True)
token_app = typer.Typer(help="REST API tokens: admin (all tenants) or one tenant's.", no_args_is_help=True)


def _password(password: str | None, stdin: bool) -> str:
    if stdin:
        pw = sys.stdin.readline().rstrip("\r\n")
    elif password is not None:
        pw = password
    elif sys.stdin.isatty():
        pw = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != pw:
            fail("the passwords differ")
    else:
        fail("give --password PASSWORD or --password-stdin")
    if not pw:
        fail("empty password")
    return pw


@admin_app.command("add")
def admin_add(ctx: typer.Context, email: str,
              password: Annotated[str | None, typer.Option("--password", "-p")] = None,
              password_stdin: Annotated[bool, typer.Option("--password-stdin")] = False,
              tenant: Annotated[str | None, typer.Option("--tenant", help="make a tenant admin of TENANT")] = None,
              ) -> None:
    """Create a web admin user (all tenants), or with --tenant an admin of one tenant."""
    from ..web.auth import AuthError, user_add

    c: Context = ctx.obj
    pw = _password(password, password_stdin)
    try:
        user_add(c.engine, email, pw, role="tenant_admin" if tenant else "admin", tenant=tenant)
    except AuthError as exc:
        fail(str(exc))
    console.print(f"admin user {email} added" + (f" for tenant {tenant}" if tenant else ""), highlight=False)


@admin_app.command("list")
def admin_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List web admin users."""
    from ..web.auth import user_list

    c: Context = ctx.obj
    rows = user_list(c.engine)
    if as_json:
        emit_json(rows)
        return
    emit_table(["email", "role", "tenant", "enabled", "last login"],
               [[r["email"], r["role"], r["tenant"] or "", r["enabled"], r["last_login_at"] or ""] for r in rows])


@token_app.command("add")
def token_add(ctx: typer.Context,
              tenant: Annotated[str | None, typer.Option("--tenant", help="a token for this tenant only")] = None,
              admin: Annotated[bool, typer.Option("--admin", help="a token for all tenants")] = False,
              name: Annotated[str, typer.Option("--name", help="what the token is for")] = "",
              as_json: JsonOpt = False) -> None:
    """Create an API token and print it (once: only its hash is kept)."""
    from ..web.auth import AuthError
    from ..web.auth import token_add as add

    c: Context = ctx.obj
    if admin == bool(tenant):
        fail("give exactly one of --admin or --tenant TENANT")
    try:
        made = add(c.engine, "admin" if admin else "tenant", tenant, name)
    except AuthError as exc:
        fail(str(exc))
    if as_json:
        emit_json({"id": made.id, "token": made.token, "prefix": made.prefix, "scope": made.scope,
                   "tenant": made.tenant})
        return
    print(made.token)
    print(f"token {made.id} ({made.scope}{' ' + made.tenant if made.tenant else ''}): store it now, "
          "it cannot be shown again", file=sys.stderr)


@token_app.command("list")
def token_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List API tokens (prefix only)."""
    from ..web.auth import token_list as listing

    c: Context = ctx.obj
    rows = listing(c.engine)
    if as_json:
        emit_json(rows)
        return
    emit_table(["id", "prefix", "name", "scope", "tenant", "created", "last used", "revoked"],
               [[r["id"], r["prefix"] + "…", r["name"], r["scope"], r["tenant"] or "", r["created_at"],
                 r["last_used_at"] or "", r["revoked_at"] or ""] for r in rows])


@token_app.command("revoke")
def token_revoke(ctx: typer.Context, token_id: int) -> None:
    """Revoke an API token by its id; it stops working at once."""
    from ..web.auth import token_revoke as revoke

    c: Context = ctx.obj
    if not revoke(c.engine, token_id):
        fail(f"no active token {token_id}")
    console.print(f"token {token_id} revoked", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(admin_app, name="admin")
    app.add_typer(token_app, name="token")
