"""``dovetail queue``: postqueue -p / postcat -q / postqueue -f / postsuper -h -H -d."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer

from .context import Context, emit_json, fail

queue_app = typer.Typer(help="Inspect and act on the mail queue (like postqueue/postsuper).", no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _queue(ctx: typer.Context):  # noqa: ANN202
    from ..queue import Queue

    c: Context = ctx.obj
    c.require_init()
    return Queue(c.layout.queue)


def _entry_json(e) -> dict:  # noqa: ANN001
    return {"id": e.queue_id, "state": e.state, "size": e.size, "arrival": e.arrival, "sender": e.sender,
            "recipients": [{"address": r.address, "status": r.status, "reason": r.reason} for r in e.recipients],
            "reason": e.reason, "next_attempt": e.next_attempt or None, "attempts": e.attempts}


@queue_app.command("list")
def queue_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List queued messages: id, size, arrival, sender, recipients, reason (postqueue -p)."""
    entries = sorted(_queue(ctx).list_messages(), key=lambda e: e.arrival)
    if as_json:
        emit_json([_entry_json(e) for e in entries])
        return
    if not entries:
        print("Mail queue is empty")
        return
    print(f"{'-Queue ID-':<20} {'--Size--':>8} {'----Arrival Time----':<20} -Sender/Recipient-------")
    total = 0
    for e in entries:
        mark = {"active": "*", "hold": "!"}.get(e.state, " ")
        when = dt.datetime.fromtimestamp(e.arrival).strftime("%a %b %d %H:%M:%S") if e.arrival else "?"
        print(f"{e.queue_id + mark:<20} {e.size:>8} {when:<20} {e.sender or 'MAILER-DAEMON'}")
        if e.reason:
            print(f"{'':<20} ({e.reason})")
        for r in e.recipients:
            if r.status == "pending":
                print(f"{'':<51}{r.address}")
        print()
        total += e.size
    print(f"-- {total // 1024} Kbytes in {len(entries)} Request{'s' if len(entries) != 1 else ''}.")


@queue_app.command("show")
def queue_show(ctx: typer.Context, queue_id: str, as_json: JsonOpt = False) -> None:
    """Print a queued message's envelope and content (postcat -q)."""
    try:
        shown = _queue(ctx).show(queue_id)
    except (KeyError, ValueError) as exc:
        fail(f"{queue_id}: {'no such message in the queue' if isinstance(exc, KeyError) else exc}")
    env = shown.envelope
    if as_json:
        emit_json({**_entry_json(shown.entry), "client": env.client_address, "helo": env.helo,
                   "protocol": env.protocol, "tls": env.tls, "auth_user": env.auth_user, "ret": env.ret,
                   "envid": env.envid, "message": shown.message.decode("utf-8", "replace")})
        return
    print("*** ENVELOPE RECORDS ***")
    print(f"queue_id: {shown.entry.queue_id} ({shown.entry.state})")
    print(f"arrival: {dt.datetime.fromtimestamp(env.arrival).isoformat(timespec='seconds')}")
    print(f"sender: {env.sender}")
    print(f"client: {env.client_name}[{env.client_address}] helo={env.helo} proto={env.protocol} tls={env.tls}")
    for r in env.recipients:
        print(f"recipient: {r.address} status={r.status}" + (f" ({r.reason})" if r.reason else ""))
    print("*** MESSAGE CONTENTS ***")
    print(shown.message.decode("utf-8", "replace"), end="")
    print("*** END OF MESSAGE ***")


@queue_app.command("flush")
def queue_flush(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Retry every deferred message now (postqueue -f)."""
    n = _queue(ctx).flush()
    emit_json({"flushed": n}) if as_json else print(f"{n} deferred message(s) scheduled for delivery now")


def _action(verb: str, doc: str):  # noqa: ANN202
    def command(ctx: typer.Context, queue_id: Annotated[str, typer.Argument(help="Queue id, or ALL")],
                as_json: JsonOpt = False) -> None:
        try:
            n = getattr(_queue(ctx), verb)(queue_id)
        except ValueError as exc:
            fail(str(exc))
        if not n and queue_id != "ALL":
            fail(f"{queue_id}: no such message in the queue")
        emit_json({verb: n}) if as_json else print(f"{verb}: {n} message(s)")

    command.__doc__ = doc
    return command


queue_app.command("hold")(_action("hold", "Put a message (or ALL) on hold (postsuper -h)."))
queue_app.command("release")(_action("release", "Release a held message (or ALL) (postsuper -H)."))
queue_app.command("delete")(_action("delete", "Delete a message (or ALL) from the queue (postsuper -d)."))


def register(app: typer.Typer) -> None:
    app.add_typer(queue_app, name="queue")
