"""Schemathesis over the OpenAPI schema: generated requests to every operation never get a 500.

Runs against the real app over SQLite with an admin token and a seeded tenant/domain/mailbox so
that some generated ids hit real objects. Examples per operation are few to keep the suite fast.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402

from .conftest import make_env  # noqa: E402


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[object, str]]:
    from dovetail import config, datadir

    root = tmp_path / "data"
    root.mkdir()
    (root / config.CONFIG_NAME).write_text(config.default_file_text())
    datadir.init(root)
    for env in make_env(root):
        env.directory.tenant_add("acme")
        env.directory.domain_add("acme.test", "acme")
        env.directory.mailbox_add("bob@acme.test", None)
        _seed_outbound(env)
        yield schemathesis.openapi.from_asgi("/api/v1/openapi.json", env.client.app), env.admin_token


def _seed_outbound(env) -> None:  # noqa: ANN001
    """A transport rule, DKIM keys, SMTP credentials, a reply inbox and an IMAP source of acme, so that
    generated requests to the outbound routes meet real objects too."""
    from dovetail.outbound.credentials import SmtpCredentials
    from dovetail.outbound.keys import DkimKeys
    from dovetail.outbound.transports import Transports
    from dovetail.replies.service import RepliesService
    from dovetail.replies.sources.imap import ImapAccounts
    from dovetail.replies.sources.local import LocalHook

    Transports(env.engine).set("tenant", "acme", "mx")
    DkimKeys(env.engine, env.cfg.data_dir / "dkim").ensure("acme.test")
    SmtpCredentials(env.engine).add("acme")
    svc = RepliesService.open(env.engine, env.cfg.data_dir)
    LocalHook(svc).mark("acme", "bob@acme.test")
    ImapAccounts(env.engine, svc.sealer).add("acme", "support", host="imap.acme.test", username="u", password="p")


def test_no_server_errors(api: tuple[object, str]) -> None:
    schema, token = api
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 25
    tried: list[str] = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=10, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def check(case) -> None:  # noqa: ANN001
            response = case.call(headers={"Authorization": f"Bearer {token}"})
            assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.text}"
            if response.status_code >= 400:
                ctype = response.headers.get("content-type")
                ctype = ctype[0] if isinstance(ctype, list) else ctype
                assert ctype == "application/problem+json", response.text
                assert response.json()["status"] == response.status_code

        check()
        tried.append(f"{operation.method.upper()} {operation.path}")
    assert "POST /api/v1/mailboxes" in tried
    for outbound in ("PUT /api/v1/transports/{rule}/{match}", "GET /api/v1/transports/resolve",
                     "POST /api/v1/domains/{domain}/dkim/{action}", "PUT /api/v1/tenants/{tenant}/send-limits",
                     "POST /api/v1/smtp-credentials", "POST /api/v1/reply-inboxes", "POST /api/v1/imap-sources"):
        assert outbound in tried
