"""Replies verbs: ``dovetail webhooks list|add|rm|deliveries|redeliver``, ``campaigns list``, ``replies list``.

Mounted on the main ``dovetail`` command by :func:`register`. Registry errors (unknown tenant,
bad URL) print one line and exit 2 like the other verbs.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer

from ..replies.outbox import EVENT_TYPES
from ..replies.registry import RegistryError
from ..replies.service import RepliesService
from .context import Context, emit_json, emit_table, fail

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
TenantOpt = Annotated[str, typer.Option("--tenant", "-t", help="The tenant.")]

webhooks_app = typer.Typer(help="Webhook endpoints and the delivery outbox.", no_args_is_help=True)
campaigns_app = typer.Typer(help="Campaigns of the replies engine.", no_args_is_help=True)
replies_app = typer.Typer(help="Replies received and threaded to campaigns.", no_args_is_help=True)


def _svc(ctx: typer.Context) -> RepliesService:
    c: Context = ctx.obj
    return RepliesService.open(c.engine, c.data_dir)


def _when(ts: float | None) -> str:
    return "" if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _guard(fn):  # noqa: ANN001, ANN202 - typer needs the wrapped signature
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        try:
            return fn(*args, **kwargs)
        except RegistryError as exc:
            fail(str(exc))

    return wrapper


@webhooks_app.command("list")
@_guard
def webhooks_list(ctx: typer.Context, tenant: TenantOpt, as_json: JsonOpt = False) -> None:
    """List a tenant's webhook endpoints."""
    rows = _svc(ctx).outbox.endpoints(tenant)
    if as_json:
        emit_json(rows)
        return
    emit_table(["id", "url", "events", "enabled", "description"],
               [[r["id"], r["url"], ",".join(r["event_types"]), "yes" if r["enabled"] else "no", r["description"]]
                for r in rows])


@webhooks_app.command("add")
@_guard
def webhooks_add(ctx: typer.Context, tenant: TenantOpt, url: str,
                 events: Annotated[list[str] | None, typer.Option("--event", "-e",
                                   help=f"Event type (repeatable; default all): {', '.join(EVENT_TYPES)}")] = None,
                 description: Annotated[str, typer.Option("--description")] = "", as_json: JsonOpt = False) -> None:
    """Add an endpoint; prints its signing secret (shown only now)."""
    ep = _svc(ctx).outbox.add_endpoint(tenant, url, events or None, description)
    if as_json:
        emit_json(ep)
    else:
        print(f"endpoint {ep['id']} added for {url}")
        print(f"secret: {ep['secret']}")


@webhooks_app.command("rm")
@_guard
def webhooks_rm(ctx: typer.Context, tenant: TenantOpt, endpoint_id: int) -> None:
    """Remove an endpoint and its deliveries."""
    if not _svc(ctx).outbox.remove_endpoint(tenant, endpoint_id):
        fail(f"no endpoint {endpoint_id} in tenant {tenant}")
    print(f"endpoint {endpoint_id} removed")


@webhooks_app.command("deliveries")
@_guard
def webhooks_deliveries(ctx: typer.Context, tenant: TenantOpt,
                        status: Annotated[str | None, typer.Option("--status",
                                          help="pending, delivered, gone or dead")] = None,
                        limit: Annotated[int, typer.Option("--limit")] = 50, as_json: JsonOpt = False) -> None:
    """Recent deliveries of the outbox, newest first."""
    if status and status not in ("pending", "delivered", "gone", "dead"):
        fail("--status is one of pending, delivered, gone, dead")
    rows = _svc(ctx).outbox.deliveries(tenant, status=status, limit=limit)
    if as_json:
        emit_json(rows)
        return
    emit_table(["id", "event", "type", "endpoint", "status", "attempts", "next", "last"],
               [[r["id"], r["event_id"], r["type"], r["endpoint_id"], r["status"], r["attempts"],
                 _when(r["next_attempt_at"]) if r["status"] == "pending" else "",
                 r["last_status"] or (r["last_error"] or "")[:40]] for r in rows])


@webhooks_app.command("redeliver")
@_guard
def webhooks_redeliver(ctx: typer.Context, tenant: TenantOpt, delivery_id: int) -> None:
    """Queue a delivery again (after a dead letter, a 410, or to replay it)."""
    if not _svc(ctx).outbox.redeliver(tenant, delivery_id):
        fail(f"no delivery {delivery_id} in tenant {tenant}")
    print(f"delivery {delivery_id} queued")


@campaigns_app.command("list")
@_guard
def campaigns_list(ctx: typer.Context, tenant: TenantOpt, as_json: JsonOpt = False) -> None:
    """List a tenant's campaigns."""
    rows = [c.as_dict() for c in _svc(ctx).registry.campaigns(tenant)]
    if as_json:
        emit_json(rows)
        return
    emit_table(["id", "name", "window", "created"],
               [[r["id"], r["name"], f"{r['window_days']}d", r["created_at"]] for r in rows])


@replies_app.command("list")
@_guard
def replies_list(ctx: typer.Context, tenant: TenantOpt,
                 campaign: Annotated[int | None, typer.Option("--campaign", help="campaign id")] = None,
                 kind: Annotated[str | None, typer.Option("--kind")] = None,
                 limit: Annotated[int, typer.Option("--limit")] = 50, as_json: JsonOpt = False) -> None:
    """Recent replies, newest first."""
    rows = _svc(ctx).queries.replies(tenant, campaign_id=campaign, kind=kind, limit=limit)
    if as_json:
        emit_json(rows)
        return
    emit_table(["id", "from", "kind", "match", "campaign", "subject", "text"],
               [[r["id"], r["from"], r["kind"] + (f"/{r['bounce_type']}" if r["bounce_type"] else ""),
                 r["match_method"], r["campaign_id"], r["subject"][:40], r["stripped_text"][:50].replace("\n", " ")]
                for r in rows])


inbox_app = typer.Typer(help="Mailboxes of ours whose deliveries go to the replies pipeline.",
                        no_args_is_help=True)
imap_app = typer.Typer(help="IMAP accounts elsewhere (Dovecot, a hosted mailbox) the engine follows.",
                       no_args_is_help=True)
replies_app.add_typer(inbox_app, name="inbox")
replies_app.add_typer(imap_app, name="imap")


def _hook(ctx: typer.Context):  # noqa: ANN202
    from ..replies.sources.local import LocalHook

    return LocalHook(_svc(ctx))


@inbox_app.command("add")
@_guard
def inbox_add(ctx: typer.Context, tenant: TenantOpt, address: str, as_json: JsonOpt = False) -> None:
    """Mark a mailbox as a reply inbox: each message delivered to it is threaded and classified."""
    owner, stored = _hook(ctx).add_inbox(tenant, address)
    emit_json({"tenant": owner, "address": stored}) if as_json else print(f"{address} is a reply inbox")


@inbox_app.command("rm")
@_guard
def inbox_rm(ctx: typer.Context, tenant: TenantOpt, address: str) -> None:
    """Stop handing a mailbox's deliveries to the replies pipeline."""
    if not _hook(ctx).unmark(tenant, address):
        fail(f"{address} is not a reply inbox of tenant {tenant}")
    print(f"{address} is no longer a reply inbox")


@inbox_app.command("list")
@_guard
def inbox_list(ctx: typer.Context, tenant: TenantOpt, as_json: JsonOpt = False) -> None:
    """A tenant's reply inboxes."""
    rows = _hook(ctx).inboxes(tenant)
    emit_json(rows) if as_json else print("\n".join(rows) or "no reply inboxes")


@imap_app.command("add")
@_guard
def imap_add(ctx: typer.Context, tenant: TenantOpt, name: str,
             host: Annotated[str, typer.Option("--host")],
             username: Annotated[str, typer.Option("--user")],
             port: Annotated[int, typer.Option("--port")] = 993,
             tls: Annotated[str, typer.Option("--tls", help="implicit | starttls | none")] = "implicit",
             folder: Annotated[str, typer.Option("--folder")] = "INBOX", as_json: JsonOpt = False) -> None:
    """Follow an IMAP account (password on standard input): its new mail goes through the replies pipeline."""
    import sys

    from ..replies.sources.imap import ImapAccounts

    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        fail("give the password on standard input")
    svc = _svc(ctx)
    acct = ImapAccounts(svc.engine, svc.sealer).add(tenant, name, host=host, port=port, tls=tls, username=username,
                                                    password=password, folder=folder)
    emit_json({"id": acct.id, "name": name}) if as_json else print(f"IMAP account {name} added ({host}:{port})")


@imap_app.command("list")
@_guard
def imap_list(ctx: typer.Context, tenant: Annotated[str | None, typer.Option("--tenant", "-t")] = None,
              as_json: JsonOpt = False) -> None:
    """IMAP accounts the engine follows."""
    from ..replies.sources.imap import ImapAccounts

    rows = [{"id": a.id, "tenant": a.tenant, "name": a.name, "host": a.host, "port": a.port, "tls": a.tls,
             "user": a.username, "folder": a.folder} for a in ImapAccounts(_svc(ctx).engine).list(tenant)]
    if as_json:
        emit_json(rows)
        return
    emit_table(["id", "tenant", "name", "server", "tls", "user", "folder"],
               [[r["id"], r["tenant"], r["name"], f"{r['host']}:{r['port']}", r["tls"], r["user"], r["folder"]]
                for r in rows])


@imap_app.command("rm")
@_guard
def imap_rm(ctx: typer.Context, tenant: TenantOpt, account_id: int) -> None:
    """Stop following an IMAP account (its checkpoints go with it)."""
    from ..replies.sources.imap import ImapAccounts

    if not ImapAccounts(_svc(ctx).engine).remove(tenant, account_id):
        fail(f"no IMAP account {account_id} in tenant {tenant}")
    print(f"IMAP account {account_id} removed")


@imap_app.command("status")
@_guard
def imap_status(ctx: typer.Context, tenant: Annotated[str | None, typer.Option("--tenant", "-t")] = None,
                as_json: JsonOpt = False) -> None:
    """How far the engine got in each IMAP account, and its last error."""
    from ..replies.sources.imap import ImapAccounts

    rows = ImapAccounts(_svc(ctx).engine).status(tenant)
    if as_json:
        emit_json(rows)
        return
    emit_table(["id", "tenant", "name", "enabled", "last uid", "synced", "last error"],
               [[r["id"], r["tenant"], r["name"], "yes" if r["enabled"] else "no",
                 "" if r["last_uid"] is None else r["last_uid"], r["synced_at"] or "never",
                 (r["last_error"] or "")[:60]] for r in rows])


@campaigns_app.command("add")
@_guard
def campaigns_add(ctx: typer.Context, tenant: TenantOpt, name: str,
                  window_days: Annotated[int, typer.Option("--window-days")] = 60, as_json: JsonOpt = False) -> None:
    """Create a campaign (replies within its window may thread by contact and subject)."""
    camp = _svc(ctx).registry.create_campaign(tenant, name, window_days=window_days)
    emit_json({"id": camp.id, "name": name}) if as_json else print(f"campaign {camp.id} {name} created")


@campaigns_app.command("register")
@_guard
def campaigns_register(ctx: typer.Context, tenant: TenantOpt, campaign: str,
                       message_id: Annotated[str, typer.Option("--message-id")],
                       recipient: Annotated[str, typer.Option("--recipient")],
                       subject: Annotated[str, typer.Option("--subject")] = "", as_json: JsonOpt = False) -> None:
    """Register a message sent elsewhere, so replies to it thread to the campaign."""
    ob = _svc(ctx).registry.register_outbound(tenant, campaign, message_id=message_id, recipient=recipient,
                                              subject=subject)
    emit_json(ob.as_dict()) if as_json else print(f"message {ob.message_id} registered, reply token {ob.reply_token}")


def register(app: typer.Typer) -> None:
    app.add_typer(webhooks_app, name="webhooks")
    app.add_typer(campaigns_app, name="campaigns")
    app.add_typer(replies_app, name="replies")
