"""Directory verbs: tenant, domain, mailbox, alias, resolve (``postmap -q`` for addresses)."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress

from ..config import parse_size
from ..directory.addresses import display_address, display_domain
from ..directory.store import SPAM_THRESHOLDS
from .context import Context, console, emit_json, emit_table, fail

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]

tenant_app = typer.Typer(help="Tenants: the customers who own domains.", no_args_is_help=True)
domain_app = typer.Typer(help="Domains we receive mail for.", no_args_is_help=True)
mailbox_app = typer.Typer(help="Mailboxes (each a Maildir) with passwords and quotas.", no_args_is_help=True)
alias_app = typer.Typer(help="Aliases: an address forwarding to one or more targets.", no_args_is_help=True)


GreylistOpt = Annotated[str | None, typer.Option(
    "--greylist", metavar="on|off|inherit",
    help="Greylist mail to it (451 4.7.1 until the client retries); inherit: follow the tenant, then "
         "mx.greylist.enabled.")]


def _greylist_switch(value: str) -> bool | None:
    """``on``/``off``/``inherit`` of ``--greylist`` as True/False/None (one line and exit 2 otherwise)."""
    choice = value.strip().lower()
    if choice not in ("on", "off", "inherit"):
        fail(f"--greylist {value!r}: give on, off or inherit")
    return {"on": True, "off": False}.get(choice)


def _switch_text(value: bool | None) -> str:
    return "inherit" if value is None else ("on" if value else "off")


def _quota(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return parse_size(text)
    except ValueError as exc:
        fail(f"quota {text!r}: {exc}")


def _read_password(password: str | None, stdin: bool) -> str:
    if stdin:
        pw = sys.stdin.readline().rstrip("\r\n")
    elif password is not None:
        pw = password
    else:
        fail("give --password PASSWORD or --password-stdin")
    if not pw:
        fail("empty password")
    return pw


DMARC_ENFORCE_HELP = ("on: senders' DMARC reject/quarantine is applied to mail for {what}; off: verdicts are only "
                      "recorded in Authentication-Results; inherit: {inherit}.")


def _dmarc_enforce(text: str) -> bool | None:
    """``on``/``off``/``inherit`` from the command line as True/False/None."""
    choice = text.lower()
    if choice not in ("on", "off", "inherit"):
        fail(f"--dmarc-enforce {text!r}: give on, off or inherit")
    return None if choice == "inherit" else choice == "on"


def _global_enforce(c: Context) -> str:
    return "on" if c.config["mx.dmarc_enforce"] else "off"


def _enforce_text(value: bool | None, by: str, c: Context) -> str:
    """``on (tenant setting)``, ``off (domain setting)``, ``on (mx.dmarc_enforce)``."""
    if value is None:
        return f"{_global_enforce(c)} (mx.dmarc_enforce)"
    return f"{'on' if value else 'off'} ({by} setting)"


def _setting_text(d, c: Context) -> str:  # noqa: ANN001
    value, by = d.dmarc_enforce_setting
    return _enforce_text(value, by, c)


# --- tenants ------------------------------------------------------------------------------------

@tenant_app.command("add")
def tenant_add(ctx: typer.Context, name: str,
               display_name: Annotated[str, typer.Option("--display-name")] = "",
               node: Annotated[str | None, typer.Option(
                   "--node", help="Home mailbox node (default: the least used one; none on a single node).")] = None,
               as_json: JsonOpt = False) -> None:
    """Add a tenant (a short lowercase name; it becomes the folder mail/<tenant>/)."""
    t = ctx.obj.directory.tenant_add(name, display_name, node=node)
    emit_json(t) if as_json else print(f"tenant {t['name']} added"
                                       + (f" on node {t['home_node']}" if t["home_node"] else ""))


@tenant_app.command("list")
def tenant_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List tenants with their domain counts."""
    rows = ctx.obj.directory.tenant_list()
    if as_json:
        emit_json(rows)
    else:
        emit_table(["tenant", "display name", "enabled", "domains", "suppressed recipients", "node"],
                   [[r["name"], r["display_name"], "yes" if r["enabled"] else "no", r["domains"],
                     r["suppressed_recipients"], r["home_node"] or "-"] for r in rows])


@tenant_app.command("show")
def tenant_show(ctx: typer.Context, name: str, as_json: JsonOpt = False) -> None:
    """One tenant's settings."""
    row = ctx.obj.directory.tenant_get(name)
    if row is None:
        fail(f"no such tenant {name!r}")
    if as_json:
        emit_json(row)
        return
    for label, value in (("tenant", row["name"]), ("display name", row["display_name"]),
                         ("enabled", "yes" if row["enabled"] else "no"), ("domains", row["domains"]),
                         ("suppressed recipients", row["suppressed_recipients"]),
                         ("home node", row["home_node"] or "- (this installation)"),
                         ("DMARC enforcement", _enforce_text(row["dmarc_enforce"], "tenant", ctx.obj)),
                         *((f"spam {k.replace('_', '-')}", _score(row[f"spam_{k}"])) for k in SPAM_THRESHOLDS),
                         ("reply spam", row["reply_spam"]),
                         ("greylist", _switch_text(row["greylist"]))):
        print(f"{label}: {value}")


def _score(value: float | None) -> str:
    return "rspamd's action" if value is None else f"{value:g}"


def _threshold(text: str | None, option: str) -> float | None:
    if text is None or text.strip().lower() in ("off", "none", ""):
        return None
    try:
        score = float(text)
    except ValueError:
        fail(f"{option}: {text!r} is not a score (a number, or off)")
    if not math.isfinite(score):
        fail(f"{option}: {text!r} is not a score (a number, or off)")
    return score


_SCORE_HELP = "Spam score from which rspamd's verdict means this for the tenant's recipients; off: rspamd's action."


@tenant_app.command("set")
def tenant_set(ctx: typer.Context, name: str,
               display_name: Annotated[str | None, typer.Option("--display-name")] = None,
               suppressed_recipients: Annotated[str | None, typer.Option(
                   "--suppressed-recipients", metavar="reject|drop",
                   help="Submission to an address on the suppression list: reject it at RCPT TO (550 5.7.1), "
                        "or drop it (accepted, left out of the message).")] = None,
               dmarc_enforce: Annotated[str | None, typer.Option(
                   "--dmarc-enforce", metavar="on|off|inherit", help=DMARC_ENFORCE_HELP.format(
                       what="the tenant's domains (a domain's own setting comes first)",
                       inherit="follow mx.dmarc_enforce"))] = None,
               spam_reject: Annotated[str | None, typer.Option(
                   "--spam-reject", metavar="SCORE|off", help=_SCORE_HELP + " Refused 550 5.7.1.")] = None,
               spam_greylist: Annotated[str | None, typer.Option(
                   "--spam-greylist", metavar="SCORE|off", help=_SCORE_HELP + " Deferred 451 4.7.1.")] = None,
               spam_rewrite_subject: Annotated[str | None, typer.Option(
                   "--spam-rewrite-subject", metavar="SCORE|off",
                   help=_SCORE_HELP + " Subject marked, delivered to Junk.")] = None,
               spam_add_header: Annotated[str | None, typer.Option(
                   "--spam-add-header", metavar="SCORE|off", help=_SCORE_HELP + " Delivered to Junk.")] = None,
               reply_spam: Annotated[str | None, typer.Option(
                   "--reply-spam", metavar="event|drop",
                   help="A message to a reply address flagged as spam: a reply.spam event, or nothing.")] = None,
               greylist: GreylistOpt = None,
               as_json: JsonOpt = False) -> None:
    """Change a tenant's settings."""
    from ..directory import UNSET

    given = {"reject": spam_reject, "greylist": spam_greylist, "rewrite_subject": spam_rewrite_subject,
             "add_header": spam_add_header}
    spam = {k: _threshold(v, f"--spam-{k.replace('_', '-')}") for k, v in given.items() if v is not None}
    if (display_name is None and suppressed_recipients is None and dmarc_enforce is None and not spam
            and reply_spam is None and greylist is None):
        fail("nothing to change: give --display-name, --suppressed-recipients, --dmarc-enforce, --spam-* "
             "--reply-spam or --greylist")
    enforce = UNSET if dmarc_enforce is None else _dmarc_enforce(dmarc_enforce)
    directory = ctx.obj.directory
    directory.tenant_set(name, display_name=display_name, suppressed_recipients=suppressed_recipients,
                         dmarc_enforce=enforce, spam=spam or None, reply_spam=reply_spam,
                         greylist="keep" if greylist is None else _greylist_switch(greylist))
    row = directory.tenant_get(name)
    if as_json:
        emit_json(row)
    elif dmarc_enforce is not None:
        print(f"tenant {row['name']} updated; DMARC enforcement for its domains: "
              f"{_enforce_text(row['dmarc_enforce'], 'tenant', ctx.obj)}")
    else:
        print(f"tenant {row['name']} updated")


@tenant_app.command("rm")
def tenant_rm(ctx: typer.Context, name: str,
              force: Annotated[bool, typer.Option("--force", help="Also delete its domains.")] = False,
              as_json: JsonOpt = False) -> None:
    """Delete a tenant; refused while it owns domains unless --force."""
    n = ctx.obj.directory.tenant_rm(name, force=force)
    emit_json({"removed": name, "domains": n}) if as_json else print(f"tenant {name} removed"
                                                                        + (f" with {n} domain(s)" if n else ""))


# --- domains ------------------------------------------------------------------------------------

def _domain_json(d) -> dict:  # noqa: ANN001
    _, by = d.dmarc_enforce_setting
    return {"name": display_domain(d.name), "ascii": d.name, "tenant": d.tenant, "enabled": d.enabled,
            "catchall": d.catchall, "plus_separator": d.plus_separator, "postmaster": d.postmaster,
            "dmarc_enforce": d.dmarc_enforce, "dmarc_enforce_by": by, "mta_sts_mode": d.mta_sts_mode,
            "greylist": _switch_text(d.greylist)}


@domain_app.command("add")
def domain_add(ctx: typer.Context, name: str,
               tenant: Annotated[str, typer.Option("--tenant", "-t", help="Owning tenant.")],
               postmaster: Annotated[str | None, typer.Option(
                   "--postmaster", help="Where postmaster@/abuse@ go when no mailbox or alias has them.")] = None,
               plus_separator: Annotated[str, typer.Option("--plus-separator")] = "+",
               as_json: JsonOpt = False) -> None:
    """Add a domain (IDN accepted) to a tenant."""
    c: Context = ctx.obj
    d = c.directory.domain_add(name, tenant, postmaster=postmaster, plus_separator=plus_separator)
    selectors = _dkim_ensure(c, d.name)
    if as_json:
        emit_json({**_domain_json(d), "dkim_selectors": selectors})
    else:
        print(f"domain {display_domain(d.name)} added to tenant {d.tenant}")
        if selectors:
            print(f"DKIM keys generated ({', '.join(selectors)}); `dovetail dns {d.name}` prints the records")


def _dkim_ensure(c: Context, domain: str) -> list[str]:
    """Signing keys for a new domain (RSA-2048 and Ed25519)."""
    from .outbound_cmds import dkim_store

    return [k.selector for k in dkim_store(c).ensure(domain)]


@domain_app.command("list")
def domain_list(ctx: typer.Context, tenant: Annotated[str | None, typer.Option("--tenant", "-t")] = None,
                as_json: JsonOpt = False) -> None:
    """List domains."""
    rows = ctx.obj.directory.domain_list(tenant)
    if as_json:
        emit_json([_domain_json(d) for d in rows])
    else:
        emit_table(["domain", "tenant", "enabled", "catch-all", "postmaster", "+"],
                   [[display_domain(d.name), d.tenant, "yes" if d.enabled else "no", d.catchall or "-",
                     d.postmaster or "-", d.plus_separator] for d in rows])


@domain_app.command("rm")
def domain_rm(ctx: typer.Context, name: str,
              force: Annotated[bool, typer.Option("--force", help="Also delete its mailboxes.")] = False,
              as_json: JsonOpt = False) -> None:
    """Delete a domain; refused while it has mailboxes unless --force. Maildirs stay on disk."""
    ctx.obj.directory.domain_rm(name, force=force)
    emit_json({"removed": name}) if as_json else print(f"domain {name} removed")


@domain_app.command("catchall")
def domain_catchall(ctx: typer.Context, name: str,
                    target: Annotated[str | None, typer.Argument(help="Address unknown recipients go to.")] = None,
                    off: Annotated[bool, typer.Option("--off", help="Remove the catch-all.")] = False,
                    as_json: JsonOpt = False) -> None:
    """Set (NAME TARGET) or remove (NAME --off) a domain's catch-all."""
    if off == (target is not None):
        fail("give either a TARGET or --off")
    d = ctx.obj.directory.domain_set(name, catchall=None if off else target)
    if as_json:
        emit_json(_domain_json(d))
    else:
        print(f"catch-all of {display_domain(d.name)}: {d.catchall or 'off'}")


@domain_app.command("set")
def domain_set(ctx: typer.Context, name: str,
               dmarc_enforce: Annotated[str | None, typer.Option(
                   "--dmarc-enforce", metavar="on|off|inherit", help=DMARC_ENFORCE_HELP.format(
                       what="this domain", inherit="follow the tenant's setting, else mx.dmarc_enforce"))] = None,
               mta_sts: Annotated[str | None, typer.Option(
                   "--mta-sts", help="Mode of the MTA-STS policy served at mta-sts.NAME: testing (senders "
                   "report only), enforce (senders refuse mail without valid TLS) or none (withdrawn).")] = None,
               greylist: GreylistOpt = None,
               as_json: JsonOpt = False) -> None:
    """Change a domain's settings."""
    from ..directory.store import MTA_STS_MODES

    values: dict[str, object] = {}
    if dmarc_enforce is not None:
        values["dmarc_enforce"] = _dmarc_enforce(dmarc_enforce)
    if mta_sts is not None:
        if mta_sts.lower() not in MTA_STS_MODES:
            fail(f"--mta-sts {mta_sts!r}: give {', '.join(MTA_STS_MODES)}")
        values["mta_sts_mode"] = mta_sts.lower()
    if greylist is not None:
        values["greylist"] = _greylist_switch(greylist)
    if not values:
        fail("nothing to set: give --dmarc-enforce on|off|inherit, --mta-sts testing|enforce|none or "
             "--greylist on|off|inherit")
    d = ctx.obj.directory.domain_set(name, **values)
    if as_json:
        emit_json(_domain_json(d))
        return
    if dmarc_enforce is not None:
        print(f"DMARC enforcement for mail to {display_domain(d.name)}: "
              f"{_setting_text(d, ctx.obj)}")
    if mta_sts is not None:
        print(f"MTA-STS mode of {display_domain(d.name)}: {d.mta_sts_mode}")
    if greylist is not None:
        print(f"greylisting of mail to {display_domain(d.name)}: {_switch_text(d.greylist)}")


@domain_app.command("show")
def domain_show(ctx: typer.Context, name: str, as_json: JsonOpt = False) -> None:
    """One domain's settings, with the DMARC enforcement that applies and whose setting it is."""
    c: Context = ctx.obj
    d = c.directory.domain_get(name)
    if as_json:
        value, _ = d.dmarc_enforce_setting
        emit_json({**_domain_json(d), "dmarc_enforce_effective": c.config["mx.dmarc_enforce"] if value is None
                   else value})
        return
    for label, text in (("domain", display_domain(d.name)), ("tenant", d.tenant),
                        ("enabled", "yes" if d.enabled else "no"), ("catch-all", d.catchall or "-"),
                        ("postmaster", d.postmaster or "-"), ("plus separator", d.plus_separator),
                        ("DMARC enforcement", _setting_text(d, c)), ("MTA-STS mode", d.mta_sts_mode),
                        ("greylist", _switch_text(d.greylist))):
        print(f"{label}: {text}")


# --- mailboxes ----------------------------------------------------------------------------------

@mailbox_app.command("add")
def mailbox_add(ctx: typer.Context, address: str,
                password: Annotated[str | None, typer.Option("--password", "-p")] = None,
                password_stdin: Annotated[bool, typer.Option("--password-stdin")] = False,
                quota: Annotated[str | None, typer.Option("--quota", help="e.g. 2G; 0 = unlimited")] = None,
                as_json: JsonOpt = False) -> None:
    """Add a mailbox with a password (argon2id) and an optional quota."""
    from ..mailauth.passwords import hash_password

    c: Context = ctx.obj
    pw = _read_password(password, password_stdin)
    q = _quota(quota)
    addr = c.directory.mailbox_add(address, hash_password(pw),
                                   quota_bytes=c.config["directory.default_quota"] if q is None else q)
    emit_json({"address": addr}) if as_json else print(f"mailbox {display_address(addr)} added")


@mailbox_app.command("list")
def mailbox_list(ctx: typer.Context, domain: Annotated[str | None, typer.Option("--domain", "-d")] = None,
                 tenant: Annotated[str | None, typer.Option("--tenant", "-t")] = None,
                 as_json: JsonOpt = False) -> None:
    """List mailboxes."""
    rows = ctx.obj.directory.mailbox_list(domain=domain, tenant=tenant)
    if as_json:
        emit_json(rows)
    else:
        emit_table(["address", "tenant", "quota", "enabled"],
                   [[display_address(r["address"]), r["tenant"], _human(r["quota_bytes"]),
                     "yes" if r["enabled"] else "no"] for r in rows])


@mailbox_app.command("rm")
def mailbox_rm(ctx: typer.Context, address: str, as_json: JsonOpt = False) -> None:
    """Delete a mailbox from the directory (its Maildir stays on disk)."""
    ctx.obj.directory.mailbox_rm(address)
    emit_json({"removed": address}) if as_json else print(f"mailbox {address} removed")


@mailbox_app.command("passwd")
def mailbox_passwd(ctx: typer.Context, address: str,
                   password: Annotated[str | None, typer.Option("--password", "-p")] = None,
                   password_stdin: Annotated[bool, typer.Option("--password-stdin")] = False,
                   as_json: JsonOpt = False) -> None:
    """Change a mailbox's password."""
    from ..mailauth.passwords import hash_password

    pw = _read_password(password, password_stdin)
    ctx.obj.directory.mailbox_set(address, password_hash=hash_password(pw))
    emit_json({"address": address, "changed": "password"}) if as_json else print(f"password of {address} changed")


@mailbox_app.command("quota")
def mailbox_quota(ctx: typer.Context, address: str,
                  quota: Annotated[str, typer.Argument(help="e.g. 500M, 2G; 0 = unlimited")],
                  as_json: JsonOpt = False) -> None:
    """Set a mailbox's quota."""
    q = _quota(quota)
    ctx.obj.directory.mailbox_set(address, quota_bytes=q)
    emit_json({"address": address, "quota_bytes": q}) if as_json else print(f"quota of {address}: {_human(q)}")


@mailbox_app.command("import-passwd")
def mailbox_import(ctx: typer.Context, file: Annotated[Path, typer.Argument(exists=True, dir_okay=False)],
                   as_json: JsonOpt = False) -> None:
    """Import users from a Dovecot passwd-file (user@domain:{SCHEME}hash:...), keeping their hashes."""
    from ..directory import DirectoryError
    from ..mailauth.passwords import parse_passwd_line, split_scheme

    c: Context = ctx.obj
    lines = file.read_text(errors="replace").splitlines()
    added, skipped = [], []
    with Progress(console=console, transient=True, disable=as_json) as progress:
        task = progress.add_task("importing", total=len(lines))
        for n, line in enumerate(lines, 1):
            progress.advance(task)
            try:
                entry = parse_passwd_line(line)
                if entry is None:
                    continue
                user, hashed = entry
                split_scheme(hashed)
                added.append(c.directory.mailbox_add(user, hashed,
                                                     quota_bytes=c.config["directory.default_quota"]))
            except (ValueError, DirectoryError) as exc:
                skipped.append({"line": n, "reason": str(exc)})
    if as_json:
        emit_json({"added": added, "skipped": skipped})
    else:
        for s in skipped:
            print(f"{file}:{s['line']}: skipped: {s['reason']}")
        print(f"{len(added)} mailbox(es) imported, {len(skipped)} skipped")
    if skipped and not added:
        raise typer.Exit(2)


# --- aliases ------------------------------------------------------------------------------------

@alias_app.command("add")
def alias_add(ctx: typer.Context, source: str, targets: list[str], as_json: JsonOpt = False) -> None:
    """Add an alias SOURCE → TARGET... (targets of any tenant's domain, or external)."""
    have = ctx.obj.directory.alias_add(source, targets)
    emit_json({"source": source, "targets": have}) if as_json else print(f"{source} -> {', '.join(have)}")


@alias_app.command("list")
def alias_list(ctx: typer.Context, domain: Annotated[str | None, typer.Option("--domain", "-d")] = None,
               tenant: Annotated[str | None, typer.Option("--tenant", "-t")] = None,
               as_json: JsonOpt = False) -> None:
    """List aliases."""
    rows = ctx.obj.directory.alias_list(domain=domain, tenant=tenant)
    if as_json:
        emit_json(rows)
    else:
        emit_table(["alias", "tenant", "targets"],
                   [[display_address(r["source"]), r["tenant"], ", ".join(r["targets"])] for r in rows])


@alias_app.command("rm")
def alias_rm(ctx: typer.Context, source: str,
             targets: Annotated[list[str] | None, typer.Argument(help="Only these targets.")] = None,
             as_json: JsonOpt = False) -> None:
    """Remove an alias, or only some of its targets."""
    ctx.obj.directory.alias_rm(source, targets or [])
    emit_json({"removed": source, "targets": targets or "all"}) if as_json else print(f"alias {source} updated")


# --- resolve ------------------------------------------------------------------------------------

def resolve(ctx: typer.Context, address: str,
            verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show each lookup.")] = False,
            as_json: JsonOpt = False) -> None:
    """Show how ADDRESS routes: its final mailboxes, external targets, or why it is refused."""
    c: Context = ctx.obj
    res = c.resolver.resolve_uncached(address)
    enforce = res.dmarc_enforce if res.dmarc_enforce is not None else c.config["mx.dmarc_enforce"]
    if as_json:
        emit_json({"address": res.address, "status": res.status, "reason": res.reason,
                   "mailboxes": [{"address": m.address, "tenant": m.tenant, "maildir": str(m.maildir),
                                  "detail": m.detail, "quota_bytes": m.quota_bytes, "node": m.node}
                                 for m in res.mailboxes],
                   "external": res.external, "steps": res.steps,
                   "dmarc_enforce": enforce, "dmarc_enforce_by": res.dmarc_enforce_by})
    else:
        if verbose or not res.ok:
            for step in res.steps:
                print(f"  {step}")
        if verbose and res.status != "not_local" and res.status != "invalid":
            print(f"  DMARC enforcement: {_enforce_text(res.dmarc_enforce, res.dmarc_enforce_by, c)}")
        if res.ok:
            for m in res.mailboxes:
                print(f"{display_address(m.address)}\tmailbox\t{m.maildir}"
                      + (f"\tdetail={m.detail}" if m.detail else "") + (f"\tnode={m.node}" if m.node else ""))
            for e in res.external:
                print(f"{e}\texternal")
        else:
            print(f"{address}: {res.status}: {res.reason}")
    if not res.ok:
        raise typer.Exit(1)


def _human(size: int | None) -> str:
    if not size:
        return "unlimited"
    n = float(size)
    for unit in ("B", "K", "M", "G", "T"):
        if n < 1024 or unit == "T":
            return f"{n:g}{unit}" if unit == "B" else f"{n:.4g}{unit}"
        n /= 1024
    return str(n)


def register(app: typer.Typer) -> None:
    app.add_typer(tenant_app, name="tenant")
    app.add_typer(domain_app, name="domain")
    app.add_typer(mailbox_app, name="mailbox")
    app.add_typer(alias_app, name="alias")
    app.command("resolve")(resolve)
