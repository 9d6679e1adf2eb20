"""Upgrading a database keeps its rows: every migration after the first release runs on a database
that already holds tenants, domains, mailboxes and aliases (SQLite, where a batch migration rebuilds
tables and foreign keys cascade)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command

from dovetail.db import alembic_config, make_engine, migrate

BEFORE = "0005_transport_state"  # the newest revision of the previous release line


def test_upgrade_keeps_accounts(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'dovetail.db'}")
    command.upgrade(alembic_config(engine), BEFORE)
    with engine.begin() as conn:
        tenant = conn.execute(sa.text("INSERT INTO tenants (name, display_name) VALUES ('acme', 'Acme')"))
        tid = tenant.lastrowid
        dom = conn.execute(sa.text("INSERT INTO domains (name, tenant_id) VALUES ('acme.example', :t)"), {"t": tid})
        did = dom.lastrowid
        conn.execute(sa.text("INSERT INTO mailboxes (domain_id, local_part, password_hash) "
                             "VALUES (:d, 'bob', 'x')"), {"d": did})
    migrate(engine)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM mailboxes")).scalar_one() == 1
        assert conn.execute(sa.text("SELECT count(*) FROM domains")).scalar_one() == 1
        row = conn.execute(sa.text("SELECT dmarc_enforce FROM domains")).one()
        assert row[0] is None  # never set: follows its tenant, then mx.dmarc_enforce
        assert conn.execute(sa.text("SELECT suppressed_recipients FROM tenants")).scalar_one() == "reject"
        assert conn.execute(sa.text("PRAGMA foreign_keys")).scalar_one() == 1  # back on for the pool
    engine.dispose()


def test_domain_turned_off_stays_off_when_settings_become_inheritable(tmp_path: Path) -> None:
    """Before 0009 a domain's flag was on unless turned off (and the global key could only narrow it):
    after it, off stays off, on becomes "not set", so every domain enforces exactly as before."""
    engine = make_engine(f"sqlite:///{tmp_path / 'dovetail.db'}")
    command.upgrade(alembic_config(engine), "0008_transport_bind")
    with engine.begin() as conn:
        tid = conn.execute(sa.text("INSERT INTO tenants (name) VALUES ('acme')")).lastrowid
        for name, flag in (("on.example", True), ("off.example", False)):
            conn.execute(sa.text("INSERT INTO domains (name, tenant_id, dmarc_enforce) VALUES (:n, :t, :f)"),
                         {"n": name, "t": tid, "f": flag})
    migrate(engine)
    with engine.begin() as conn:
        rows = dict(conn.execute(sa.text("SELECT name, dmarc_enforce FROM domains")).all())
        assert rows == {"on.example": None, "off.example": 0}
        assert conn.execute(sa.text("SELECT dmarc_enforce FROM tenants")).scalar_one() is None
        conn.execute(sa.text("INSERT INTO domains (name, tenant_id) VALUES ('new.example', :t)"), {"t": tid})
    command.downgrade(alembic_config(engine), "0008_transport_bind")
    with engine.connect() as conn:
        rows = dict(conn.execute(sa.text("SELECT name, dmarc_enforce FROM domains")).all())
        assert rows == {"on.example": 1, "off.example": 0, "new.example": 1}
    engine.dispose()
