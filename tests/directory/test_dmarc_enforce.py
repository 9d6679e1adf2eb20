"""Whose DMARC enforcement setting applies to mail for a domain: the domain's, else its tenant's, else the
global key; on SQLite and PostgreSQL, through the migration that made both settings inheritable."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command

from dovetail.db import alembic_config, make_engine, migrate
from dovetail.directory import UNSET, Directory, DirectoryError, Resolver


@pytest.fixture
def directory(database_url: str) -> Directory:
    engine = make_engine(database_url)
    migrate(engine)
    d = Directory(engine)
    d.tenant_add("acme")
    d.domain_add("acme.example", "acme")
    d.domain_add("other.example", "acme")
    d.mailbox_add("bob@acme.example", None)
    return d


def test_domain_then_tenant_then_global(directory: Directory, tmp_path: Path) -> None:
    resolver = Resolver(directory, tmp_path / "mail", check_interval=0)

    def setting() -> tuple[bool | None, str]:
        res = resolver.resolve("bob@acme.example")
        return res.dmarc_enforce, res.dmarc_enforce_by

    assert setting() == (None, "global")
    assert directory.domain_get("acme.example").dmarc_enforce_setting == (None, "global")
    directory.tenant_set("acme", dmarc_enforce=False)
    assert setting() == (False, "tenant")
    assert directory.tenant_get("acme")["dmarc_enforce"] is False
    directory.domain_set("acme.example", dmarc_enforce=True)
    assert setting() == (True, "domain")  # the domain's own setting beats its tenant's
    assert directory.domain_get("other.example").dmarc_enforce_setting == (False, "tenant")
    directory.tenant_set("acme", display_name="Acme", dmarc_enforce=UNSET)  # other changes leave it alone
    assert directory.tenant_get("acme")["dmarc_enforce"] is False
    directory.domain_set("acme.example", dmarc_enforce=None)
    directory.tenant_set("acme", dmarc_enforce=None)
    assert setting() == (None, "global")
    with pytest.raises(DirectoryError):
        directory.tenant_set("nobody", dmarc_enforce=True)


def test_migration_down_and_up_keeps_the_settings(database_url: str) -> None:
    engine = make_engine(database_url)
    migrate(engine)
    d = Directory(engine)
    d.tenant_add("acme")
    d.domain_add("off.example", "acme")
    d.domain_add("plain.example", "acme")
    d.domain_set("off.example", dmarc_enforce=False)
    command.downgrade(alembic_config(engine), "0008_transport_bind")
    migrate(engine)
    assert d.domain_get("off.example").dmarc_enforce is False
    assert d.domain_get("plain.example").dmarc_enforce is None
    engine.dispose()
