"""``dovetail db copy``: a single node's SQLite database into an empty PostgreSQL, as the first step from
one node to several: the directory reads the same, new rows get fresh ids, and a target in use is
refused with one line and nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import sqlalchemy as sa

from dovetail import config
from dovetail.datadir import init
from dovetail.db import make_engine, migrate
from dovetail.directory import Directory
from dovetail.mailauth.passwords import hash_password

from ..master.harness import cli


def listing(directory: Directory) -> dict:
    return {"tenants": directory.tenant_list(), "mailboxes": directory.mailbox_list(),
            "aliases": directory.alias_list()}


def test_a_single_node_database_copies_into_postgresql(tmp_path: Path, pg_cluster: object) -> None:
    data = tmp_path / "data"
    init(data)
    source = make_engine(config.load(data).database_url)
    migrate(source)
    directory = Directory(source)
    directory.tenant_add("acme")
    directory.tenant_add("globex")
    directory.tenant_rm("globex")  # a gap in the ids, as real installations have
    directory.tenant_add("umbrella")
    directory.domain_add("acme.example", "acme")
    directory.mailbox_add("bob@acme.example", hash_password("s3cret-pass"))
    directory.mailbox_add("ann@acme.example", hash_password("s3cret-pass"), quota_bytes=1 << 20)
    directory.tenant_set("acme", greylist=False)
    directory.tenant_set("umbrella", enabled=False)
    directory.alias_add("sales@acme.example", ["bob@acme.example"])
    before = listing(directory)
    source.dispose()
    url = pg_cluster.new_database()  # type: ignore[attr-defined]

    out = cli(data, "db", "copy", "--to", url, "--json")
    assert out.returncode == 0, out.stderr
    copied = json.loads(out.stdout)["tables"]
    assert copied["mailboxes"] == 2 and copied["tenants"] == 2 and copied["aliases"] >= 1

    target = make_engine(url)
    try:
        moved = Directory(target)
        assert listing(moved) == before  # booleans, timestamps and ids as they were
        moved.tenant_add("initech")  # the sequences were moved past the copied ids
        with target.connect() as conn:
            ids = conn.execute(sa.text("SELECT id FROM tenants ORDER BY id")).scalars().all()
        assert len(ids) == 3 and moved.tenant_id("initech") > moved.tenant_id("umbrella")
    finally:
        target.dispose()

    again = cli(data, "db", "copy", "--to", url)  # the target now holds a directory
    assert again.returncode == 2 and "already holds a directory" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    bad = cli(data, "db", "copy", "--to", "postgresql://nobody@127.0.0.1:9/none")
    assert bad.returncode == 2 and "nothing was written" in bad.stderr
