"""``dovetail cert list|issue|renew``: the certificate store and ACME orders from the command line.

Orders run here, in the foreground, against the CA of ``acme.directory_url``; the running web service
answers the CA's HTTP-01 and TLS-ALPN-01 requests from the files the order puts under ``tls/acme/``, and
every TLS listener serves the new certificate at its next handshake (no restart, no reload).
"""

from __future__ import annotations

from typing import Annotated

import typer

from .context import Context, emit_json, emit_table, fail

cert_app = typer.Typer(help="TLS certificates: the store, ACME orders and renewal.", no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _renewer(c: Context):  # noqa: ANN202
    from dovetail.certs.renew import certs_renewer

    return certs_renewer(c.config)


def _rows(c: Context) -> list[dict]:
    from dovetail.certs.store import CertStore, certificate_rows

    return certificate_rows(CertStore(c.layout.tls))


@cert_app.command("list")
def cert_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Stored certificates: names, issuer, expiry, days left, renewal status."""
    rows = _rows(ctx.obj)
    if as_json:
        emit_json([{**r, "not_after": r["not_after"].isoformat()} for r in rows])
        return
    emit_table(["names", "issuer", "not after", "days left", "status"],
               [[", ".join(r["names"]), r["issuer"], f"{r['not_after']:%Y-%m-%d %H:%M}Z", r["days_left"], r["status"]]
                for r in rows])


@cert_app.command("issue")
def cert_issue(ctx: typer.Context,
               names: Annotated[list[str] | None, typer.Argument(metavar="[NAME]...",
                                                                   help="Names of one certificate.")] = None,
               domain: Annotated[list[str] | None, typer.Option(
                   "--domain", help="A hosted domain: its certificate for mail.<d> and mta-sts.<d> "
                                    "(and autoconfig.<d> with acme.autoconfig).")] = None,
               hostname: Annotated[bool, typer.Option("--hostname", help="The server hostname's certificate.")] = False,
               challenge: Annotated[str | None, typer.Option(
                   "--challenge", help="http-01, tls-alpn-01 or dns-01 (default: acme.challenge).")] = None,
               as_json: JsonOpt = False) -> None:
    """Order certificates from the ACME CA (each name is checked to point at this server first)."""
    from dovetail.certs.renew import wanted_names
    from dovetail.certs.store import CertError, normalize_name

    c: Context = ctx.obj
    cfg = c.config
    sets: list[list[str]] = []
    try:
        if names:
            sets.append([normalize_name(n) for n in names])
        for d in domain or []:
            dom = normalize_name(d)
            if not c.directory.is_local_domain(dom):
                fail(f"{dom} is not a hosted domain (`dovetail domain list`)")
            sets += wanted_names("", [dom], cfg["acme.autoconfig"])
        if hostname:
            sets.append([normalize_name(cfg.hostname)])
    except CertError as exc:
        fail(str(exc))
    if not sets:
        fail("name at least one NAME, --domain D or --hostname")
    if challenge is not None and challenge not in ("http-01", "tls-alpn-01", "dns-01"):
        fail(f"--challenge {challenge!r}: expected http-01, tls-alpn-01 or dns-01")
    renewer = _renewer(c)
    outcomes = [renewer.attempt(names_[0], names_, challenge) for names_ in sets]
    _report(outcomes, as_json)


@cert_app.command("renew")
def cert_renew(ctx: typer.Context,
               names: Annotated[list[str] | None, typer.Argument(metavar="[NAME]...",
                                                                   help="Only these certificates.")] = None,
               force: Annotated[bool, typer.Option("--force", help="Renew now, due or not.")] = False,
               new_key: Annotated[bool, typer.Option("--new-key", help=(
                   "Make a new private key (renewals keep the current one, so DANE records stay true)."))] = False,
               as_json: JsonOpt = False) -> None:
    """Renew ACME certificates past two thirds of their lifetime (all of them with --force)."""
    c: Context = ctx.obj
    renewer = _renewer(c)
    wanted = [n.lower().rstrip(".") for n in names or []]
    outcomes = renewer.renew(force=force, only=wanted, new_key=new_key)
    if wanted and not outcomes:
        fail(f"no ACME certificate in the store has {', '.join(wanted)}" + ("" if force else " due (try --force)"))
    if not outcomes and not as_json:
        print("nothing to renew")
        return
    _report(outcomes, as_json)


def _report(outcomes, as_json: bool) -> None:  # noqa: ANN001
    if as_json:
        emit_json([{"id": o.cert_id, "names": list(o.names), "ok": o.ok, "message": o.message,
                    "serial": o.info.serial if o.info else None} for o in outcomes])
    else:
        for o in outcomes:
            print(f"{', '.join(o.names)}: {o.message}")
    if any(not o.ok for o in outcomes):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(cert_app, name="cert")
