"""The replies verbs on a real data directory, through typer's runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from dovetail.cli import replies_cmds as replies_cli
from dovetail.cli.context import Context
from dovetail.replies.pipeline import Source
from dovetail.replies.service import RepliesService

from .mails import reply

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _app(data_dir: Path) -> typer.Typer:
    app = typer.Typer(no_args_is_help=True)

    @app.callback()
    def _root(ctx: typer.Context) -> None:
        ctx.obj = Context(data_dir=data_dir)

    replies_cli.register(app)
    return app


def test_verbs(data_dir: Path) -> None:
    app, run = _app(data_dir), CliRunner()
    ctx = Context(data_dir=data_dir)
    ctx.directory.tenant_add("acme")
    svc = RepliesService.open(ctx.engine, data_dir)
    svc.registry.register_outbound("acme", "Q1", message_id="<a@acme.example>", recipient="anna@client.example")

    out = run.invoke(app, ["webhooks", "add", "-t", "acme", "http://127.0.0.1:9/hook"])
    assert out.exit_code != 0 and "non-public" in str(out.exception)  # SSRF guard: loopback refused by default
    out = run.invoke(app, ["webhooks", "add", "-t", "acme", "http://hooks.invalid:9/hook", "-e", "reply.received",
                           "--json"])
    assert out.exit_code == 0, out.output
    ep = json.loads(out.output)
    assert ep["secret"].startswith("whsec_") and ep["event_types"] == ["reply.received"]
    svc.process_message(reply(in_reply_to="<a@acme.example>"), Source("acme", "test"))

    listed = json.loads(run.invoke(app, ["webhooks", "list", "-t", "acme", "--json"]).output)
    assert [e["url"] for e in listed] == ["http://hooks.invalid:9/hook"]
    deliveries = json.loads(run.invoke(app, ["webhooks", "deliveries", "-t", "acme", "--json"]).output)
    assert [d["status"] for d in deliveries] == ["pending"]
    out = run.invoke(app, ["webhooks", "redeliver", "-t", "acme", str(deliveries[0]["id"])])
    assert out.exit_code == 0 and "queued" in out.output
    assert json.loads(run.invoke(app, ["campaigns", "list", "-t", "acme", "--json"]).output)[0]["name"] == "Q1"
    rows = json.loads(run.invoke(app, ["replies", "list", "-t", "acme", "--json"]).output)
    assert [r["match_method"] for r in rows] == ["in_reply_to"]
    assert "human" in run.invoke(app, ["replies", "list", "-t", "acme"]).output
    assert run.invoke(app, ["webhooks", "rm", "-t", "acme", str(ep["id"])]).exit_code == 0
    assert run.invoke(app, ["webhooks", "rm", "-t", "acme", str(ep["id"])]).exit_code != 0
    assert run.invoke(app, ["webhooks", "list", "-t", "nosuch"]).exit_code != 0
