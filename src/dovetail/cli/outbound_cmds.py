"""Outbound verbs: ``dkim``, ``dns``, ``smtp-credentials``, ``transport``, ``send-limits``.

``register(app)`` mounts them on the ``dovetail`` command.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from .context import Context, emit_json, emit_table, fail

if TYPE_CHECKING:
    from dovetail.outbound.keys import DkimKeys

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]

dkim_app = typer.Typer(help="DKIM keys: RSA-2048 and Ed25519 selectors per domain.", no_args_is_help=True)
cred_app = typer.Typer(help="SMTP credentials of a tenant for submission (587/465).", no_args_is_help=True)
transport_app = typer.Typer(help="How mail leaves: relay (smarthost) or direct MX, per recipient domain, sender, "
                                 "sender domain or tenant.",
                            no_args_is_help=True)


def dkim_store(c: Context) -> DkimKeys:
    """The key store as the operator's tools use it (see ``DkimKeys.for_service``)."""
    from dovetail.outbound.keys import DkimKeys

    return DkimKeys.for_service(c.engine, c.layout.dkim, c.config["server.user"])


def _print_keys(keys, as_json: bool) -> None:  # noqa: ANN001
    if as_json:
        emit_json([{"domain": k.domain, "selector": k.selector, "algorithm": k.algorithm, "state": k.state,
                    "problem": k.problem, "record": k.record_name, "txt": k.txt} for k in keys])
        return
    emit_table(["domain", "selector", "algorithm", "state", "publish at"],
               [[k.domain, k.selector, k.algorithm, k.status, k.record_name] for k in keys])


def _run_keys(ctx: typer.Context, op: str, domain: str, as_json: bool) -> None:
    from dovetail.outbound.keys import DkimKeyError

    c: Context = ctx.obj
    try:
        keys = getattr(dkim_store(c), op)(domain)
    except DkimKeyError as exc:
        fail(str(exc))
    _print_keys(keys, as_json)
    if op == "rotate" and not as_json:
        print(f"Publish the new selectors (`dovetail dns {domain}`), then run `dovetail dkim activate {domain}`.")
    if op == "activate" and not as_json:
        print(f"The old selectors stay published until `dovetail dkim retire {domain}` (wait a few days).")


@dkim_app.command("list")
def dkim_list(ctx: typer.Context, domain: Annotated[str | None, typer.Argument()] = None,
              as_json: JsonOpt = False) -> None:
    """Keys per domain and their state: published, active, retiring."""
    _print_keys(dkim_store(ctx.obj).list(domain, check=True), as_json)


@dkim_app.command("generate")
def dkim_generate(ctx: typer.Context, domain: str, as_json: JsonOpt = False) -> None:
    """Create active keys for a domain that has none."""
    _run_keys(ctx, "ensure", domain, as_json)


@dkim_app.command("rotate")
def dkim_rotate(ctx: typer.Context, domain: str, as_json: JsonOpt = False) -> None:
    """Step 1 of a rotation: new selectors, published but not signing yet."""
    _run_keys(ctx, "rotate", domain, as_json)


@dkim_app.command("activate")
def dkim_activate(ctx: typer.Context, domain: str, as_json: JsonOpt = False) -> None:
    """Step 2: sign with the published selectors; the previous ones start retiring."""
    _run_keys(ctx, "activate", domain, as_json)


@dkim_app.command("retire")
def dkim_retire(ctx: typer.Context, domain: str, as_json: JsonOpt = False) -> None:
    """Step 3: withdraw retiring selectors and delete their private keys."""
    _run_keys(ctx, "retire", domain, as_json)


def planner(c: Context, resolver=None):  # noqa: ANN001, ANN201
    from dovetail.mailauth.dns import sync_resolver
    from dovetail.outbound.dnsrecords import DnsPlanner
    from dovetail.outbound.transports import Transports

    if resolver is None:  # dns.nameservers applies to the checks of the CLI too
        resolver = sync_resolver(c.config["dns.nameservers"], c.config["dns.timeout"])
    from dovetail.certs.store import CertStore, served_chain

    cert = served_chain(CertStore(c.config.data_dir / "tls"), c.config.hostname, c.config.path("tls.cert"))
    return DnsPlanner(dkim_store(c), Transports(c.engine), c.config.hostname, resolver, directory=c.directory,
                      mx_cert_pem=cert)


def dns_cmd(ctx: typer.Context, words: Annotated[list[str], typer.Argument(metavar="[check] DOMAIN")],
            as_json: JsonOpt = False) -> None:
    """Print the DNS records to publish for DOMAIN; `dns check DOMAIN` resolves and checks them."""
    from dovetail.directory import AddressError

    c: Context = ctx.obj
    check = len(words) == 2 and words[0] == "check"
    if len(words) != 1 and not check:
        fail("usage: dovetail dns DOMAIN | dovetail dns check DOMAIN")
    domain = words[-1]
    try:
        if not c.directory.is_local_domain(domain):
            fail(f"dns: {domain} is not a domain of this server")
        plan = planner(c)
        if not check:
            records = plan.dns_records(domain)
            if as_json:
                emit_json([r.__dict__ for r in records])
            else:
                for r in records:
                    print(f"; {r.purpose}{'' if r.required else ' (recommended)'}")
                    print(r.zone_line())
            return
        results = plan.check(domain)
    except AddressError as exc:
        fail(str(exc))
    if as_json:
        emit_json([{"name": r.record.name, "type": r.record.type, "expected": r.record.value, "status": r.status,
                    "found": r.found, "message": r.message, "required": r.record.required} for r in results])
    else:
        emit_table(["status", "type", "name", "problem"],
                   [[r.status, r.record.type, r.record.name, r.message] for r in results])
    if any(not r.ok and r.record.required for r in results):
        raise typer.Exit(1)


@cred_app.command("add")
def cred_add(ctx: typer.Context, tenant: str,
             description: Annotated[str, typer.Option("--description")] = "", as_json: JsonOpt = False) -> None:
    """New SMTP credentials for TENANT; the secret is shown once."""
    from dovetail.outbound.credentials import CredentialError, SmtpCredentials

    try:
        cred = SmtpCredentials(ctx.obj.engine).add(tenant, description)
    except CredentialError as exc:
        fail(str(exc))
    if as_json:
        emit_json(cred.__dict__)
    else:
        print(f"username: {cred.username}\nsecret:   {cred.secret}\n(the secret is not stored and cannot be shown "
              "again)")


@cred_app.command("list")
def cred_list(ctx: typer.Context, tenant: Annotated[str | None, typer.Option("--tenant")] = None,
              as_json: JsonOpt = False) -> None:
    """SMTP credentials (user names only)."""
    from dovetail.outbound.credentials import SmtpCredentials

    rows = SmtpCredentials(ctx.obj.engine).list(tenant)
    if as_json:
        emit_json(rows)
    else:
        emit_table(["username", "tenant", "description", "created"],
                   [[r["username"], r["tenant"], r["description"], r["created_at"]] for r in rows])


@cred_app.command("rm")
def cred_rm(ctx: typer.Context, username: str) -> None:
    """Revoke SMTP credentials."""
    from dovetail.outbound.credentials import CredentialError, SmtpCredentials

    try:
        SmtpCredentials(ctx.obj.engine).remove(username)
    except CredentialError as exc:
        fail(str(exc))
    print(f"removed {username}")


RULE_HELP = ("recipient (a domain, .domain for its subdomains, an address for lmtp rules, or *) | "
             "sender (an address, or @domain) | domain (a sender domain of ours) | tenant | default")


@transport_app.command("set")
def transport_set(
    ctx: typer.Context,
    scope: Annotated[str, typer.Argument(metavar="RULE", help=RULE_HELP)],
    match: Annotated[str, typer.Argument(help="the domain, address or tenant ('*' for default)")],
    relay: Annotated[str | None, typer.Option("--relay", help="HOST:PORT, [HOST]:PORT or relay:[HOST]:PORT "
                                                           "of a smarthost")] = None,
    mx: Annotated[bool, typer.Option("--mx", help="deliver straight to the recipient's MX")] = False,
    lmtp: Annotated[str | None, typer.Option("--lmtp", help="hand recipients to a mailbox node over LMTP: "
                                                         "lmtp:HOST:PORT or lmtp:unix:/PATH (recipient rules)")
                    ] = None,
    tls: Annotated[str, typer.Option("--tls", help="starttls | implicit | none")] = "starttls",
    user: Annotated[str | None, typer.Option("--user")] = None,
    secret: Annotated[str | None, typer.Option("--secret")] = None,
    no_dns_check: Annotated[bool, typer.Option("--no-dns-check", help="store a relay whose name does not "
                                                                      "resolve from here (yet)")] = False,
    bind_address: Annotated[str | None, typer.Option("--bind-address", metavar="IP",
                                                     help="local address of the connections (smtp_bind_address; "
                                                          "an address of this machine): per tenant, an IP pool")
                            ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Route mail to a recipient domain, or of a sender, sender domain, tenant or everyone, through a
    relay or straight to MX, optionally from a given local address. `dovetail transport resolve` shows
    which rule applies."""
    from dovetail.outbound.transports import TransportError, Transports
    from dovetail.vault import credentials_sealer

    if [bool(relay), mx, bool(lmtp)].count(True) != 1:
        fail("give exactly one of --relay HOST:PORT, --mx or --lmtp NEXTHOP")
    try:
        store = Transports(ctx.obj.engine, sealer=credentials_sealer(ctx.obj.data_dir, ctx.obj.engine))
        if lmtp:
            t = store.set_lmtp(scope, match, lmtp, dns_check=not no_dns_check)
        else:
            t = store.set_nexthop(scope, match, relay or None, tls=tls, username=user, secret=secret,
                                  dns_check=not no_dns_check, bind_address=bind_address)
    except TransportError as exc:
        fail(str(exc))
    if as_json:
        emit_json(t.public())
        return
    print(f"{t.scope} {t.match} -> {t.name}" + (f" (SES {t.ses_region})" if t.ses_region else "")
          + (f" from {t.bind_address}" if t.bind_address else ""))


@transport_app.command("list")
def transport_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Transport rules, in the order they apply."""
    from dovetail.outbound.routing import describe
    from dovetail.outbound.transports import Transports

    rows = [{**t.public(), "rule": describe(t.scope, t.match)} for t in Transports(ctx.obj.engine).list()]
    if as_json:
        emit_json(rows)
    else:
        emit_table(["rule", "scope", "match", "kind", "host", "port", "tls", "user", "bind"],
                   [[r["rule"], r["scope"], r["match"], r["kind"], r["host"], r["port"], r["tls"], r["username"],
                     r["bind_address"]] for r in rows])


@transport_app.command("rm")
def transport_rm(ctx: typer.Context, scope: Annotated[str, typer.Argument(metavar="RULE", help=RULE_HELP)],
                 match: str) -> None:
    """Remove a transport rule."""
    from dovetail.outbound.transports import TransportError, Transports

    try:
        Transports(ctx.obj.engine).remove(scope, match)
    except TransportError as exc:
        fail(str(exc))
    print(f"removed {scope} {match}")


@transport_app.command("resolve")
def transport_resolve(
    ctx: typer.Context,
    sender: Annotated[str, typer.Argument(help="the envelope sender ('<>' for the null sender)")],
    recipient: Annotated[str, typer.Argument(help="the recipient address")],
    tenant: Annotated[str | None, typer.Option("--tenant", help="the message's tenant (default: the sender "
                                                                "domain's)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Which transport mail from SENDER to RECIPIENT takes, and which rule chose it (postmap -q)."""
    from dovetail.outbound.transports import TransportError, Transports

    c: Context = ctx.obj
    try:
        route = Transports(c.engine, check_interval=0).explain(sender, recipient, tenant)
    except TransportError as exc:
        fail(str(exc))
    if as_json:
        emit_json(route)
        return
    if route["transport"] == "virtual":
        print(f"transport: virtual\nrule:      none ({route['why']})")
        return
    print(f"transport: {route['transport']}" + (f" (tls {route['tls']}" + (f", user {route['username']})"
                                                                           if route["username"] else ")")
                                                if route["kind"] == "relay" else ""))
    print(f"rule:      {route['why']}")
    if route["tenant"]:
        print(f"tenant:    {route['tenant']}")


def send_limits_cmd(ctx: typer.Context, tenant: str,
                    per_minute: Annotated[int, typer.Option("--per-minute", min=0, help="0: unlimited")] = 0,
                    per_day: Annotated[int, typer.Option("--per-day", min=0, help="recipients; 0: unlimited")] = 0,
                    ) -> None:
    """Set a tenant's sending rate and daily quota."""
    from dovetail.outbound.limits import SendLimiter

    try:
        SendLimiter(ctx.obj.engine).set_limits(tenant, per_minute, per_day)
    except ValueError as exc:
        fail(str(exc))
    print(f"{tenant}: {per_minute or 'unlimited'} per minute, {per_day or 'unlimited'} recipients per day")


def register(app: typer.Typer) -> None:
    app.add_typer(dkim_app, name="dkim")
    app.add_typer(cred_app, name="smtp-credentials")
    app.add_typer(transport_app, name="transport")
    app.command("dns")(dns_cmd)
    app.command("send-limits")(send_limits_cmd)
