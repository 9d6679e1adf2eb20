"""The cluster's node list and tenant placement, on SQLite and PostgreSQL, and through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dovetail import config
from dovetail.db import connect_and_migrate
from dovetail.directory import Directory, DirectoryError, Resolver
from dovetail.directory.nodes import NodeError, NodeStore
from tests.cli.test_cli import ok, run


@pytest.fixture
def stores(data_dir: Path) -> tuple[Directory, NodeStore]:
    engine = connect_and_migrate(config.load(data_dir))
    return Directory(engine), NodeStore(engine)


def test_a_single_installation_places_nobody(stores: tuple[Directory, NodeStore]) -> None:
    directory, nodes = stores
    assert nodes.list() == []
    assert directory.tenant_add("acme")["home_node"] is None
    assert directory.tenant_get("acme")["home_node"] is None


def test_new_tenants_go_to_the_least_used_active_mailbox_node(stores: tuple[Directory, NodeStore]) -> None:
    directory, nodes = stores
    nodes.add("mx1", "mx")
    nodes.add("store-b", "mailbox", lmtp="10.0.0.3:24")
    nodes.add("store-a", "mailbox,mx", lmtp="10.0.0.2:24", imap="10.0.0.2:143")
    homes = [directory.tenant_add(f"t{i}")["home_node"] for i in range(4)]
    # Ties go by name; the MX-only node never takes tenants.
    assert homes == ["store-a", "store-b", "store-a", "store-b"]
    nodes.set_state("store-a", "draining")
    assert directory.tenant_add("t4")["home_node"] == "store-b"
    assert directory.tenant_add("t5", node="store-b")["home_node"] == "store-b"
    with pytest.raises(DirectoryError, match="draining"):
        directory.tenant_add("t6", node="store-a")
    with pytest.raises(DirectoryError, match="no mailbox role"):
        directory.tenant_add("t6", node="mx1")
    with pytest.raises(DirectoryError, match="no such node"):
        directory.tenant_add("t6", node="nowhere")
    nodes.set_state("store-b", "draining")
    with pytest.raises(DirectoryError, match="every mailbox node is draining"):
        directory.tenant_add("t6")
    assert directory.tenant_get("t6") is None  # nothing half-saved
    counts = {n.name: n.tenants for n in nodes.list()}
    assert counts == {"mx1": 0, "store-a": 2, "store-b": 4}


def test_removal_is_refused_while_tenants_live_there(stores: tuple[Directory, NodeStore]) -> None:
    directory, nodes = stores
    nodes.add("store-a", "mailbox", lmtp="127.0.0.1:2424")
    directory.tenant_add("acme")
    with pytest.raises(NodeError, match="home of 1 tenant.*acme"):
        nodes.remove("store-a")
    directory.tenant_rm("acme")
    nodes.remove("store-a")
    assert nodes.list() == []
    with pytest.raises(NodeError, match="no such node"):
        nodes.remove("store-a")


@pytest.mark.parametrize(("name", "roles", "lmtp", "message"), [
    ("Bad_Name", "mx", None, "node name"),
    ("n1", "mx,printer", None, "roles"),
    ("n1", "", None, "roles"),
    ("n1", "mailbox", None, "needs --lmtp"),
    ("n1", "mailbox", "10.0.0.1", "expected host:port"),
    ("n1", "mailbox", "10.0.0.1:70000", "expected host:port"),
])
def test_bad_node_definitions_are_refused(stores: tuple[Directory, NodeStore], name: str, roles: str,
                                          lmtp: str | None, message: str) -> None:
    _, nodes = stores
    with pytest.raises(NodeError, match=message):
        nodes.add(name, roles, lmtp=lmtp)
    assert nodes.list() == []


def test_the_resolver_names_the_home_node(data_dir: Path, stores: tuple[Directory, NodeStore]) -> None:
    directory, nodes = stores
    nodes.add("store-a", "mailbox", lmtp="[::1]:2424")
    directory.tenant_add("acme")
    directory.domain_add("acme.example", "acme")
    directory.mailbox_add("sales@acme.example", None)
    res = Resolver(directory, data_dir / "mail", check_interval=0).resolve_uncached("sales@acme.example")
    assert res.ok and res.mailboxes[0].node == "store-a"
    assert any("home node store-a" in step for step in res.steps)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_cli_lists_places_and_reports(data_dir: Path) -> None:
    ok(data_dir, "config", "set", "node.name=store-a")
    assert "single installation" in ok(data_dir, "node", "list")
    ok(data_dir, "node", "add", "store-a", "--roles", "mailbox,mx", "--lmtp", "127.0.0.1:2424")
    ok(data_dir, "node", "add", "store-b", "--roles", "mailbox", "--lmtp", "127.0.0.1:2425")
    bad = run(data_dir, "node", "add", "store-c", "--roles", "mailbox")
    assert bad.returncode == 2 and "needs --lmtp" in bad.stderr
    assert "on node store-a" in ok(data_dir, "tenant", "add", "acme")
    assert "on node store-b" in ok(data_dir, "tenant", "add", "beta")
    ok(data_dir, "domain", "add", "beta.example", "--tenant", "beta")
    ok(data_dir, "mailbox", "add", "ann@beta.example", "--password-stdin", stdin="pw\n")
    listed = json.loads(ok(data_dir, "node", "list", "--json"))
    assert [(n["name"], n["tenants"], n["this_node"]) for n in listed] == [("store-a", 1, True),
                                                                          ("store-b", 1, False)]
    resolved = json.loads(ok(data_dir, "resolve", "ann@beta.example", "--json"))
    assert resolved["mailboxes"][0]["node"] == "store-b"
    assert "node=store-b" in ok(data_dir, "resolve", "ann@beta.example")
    ok(data_dir, "node", "drain", "store-b")
    assert "on node store-a" in ok(data_dir, "tenant", "add", "gamma")
    refused = run(data_dir, "node", "remove", "store-b")
    assert refused.returncode == 2 and "beta" in refused.stderr
    status = run(data_dir, "status", "--json")
    cluster = json.loads(status.stdout)["cluster"]
    assert cluster["node"] == "store-a"
    assert {n["name"]: n["state"] for n in cluster["nodes"]} == {"store-a": "active", "store-b": "draining"}
