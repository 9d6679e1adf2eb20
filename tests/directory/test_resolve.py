"""Recipient resolution on SQLite and PostgreSQL: order, catch-all, +tags, aliases, IDN, case, postmaster."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from dovetail.db import make_engine, migrate
from dovetail.directory import Directory, DirectoryError, Resolver


@pytest.fixture
def directory(database_url: str) -> Directory:
    engine = make_engine(database_url)
    migrate(engine)
    d = Directory(engine)
    d.tenant_add("acme")
    d.tenant_add("globex")
    d.domain_add("acme.example", "acme")
    d.domain_add("globex.example", "globex")
    for local in ("bob", "alice", "sales"):
        d.mailbox_add(f"{local}@acme.example", None, quota_bytes=1000)
    d.mailbox_add("carol@globex.example", None)
    return d


@pytest.fixture
def resolver(directory: Directory, tmp_path: Path) -> Resolver:
    return Resolver(directory, tmp_path / "mail", check_interval=0)


def addrs(res) -> list[str]:  # noqa: ANN001
    return [m.address for m in res.mailboxes]


def test_migrations_create_every_table_from_empty(database_url: str) -> None:
    engine = make_engine(database_url)
    migrate(engine)
    names = set(sa.inspect(engine).get_table_names())
    assert {"tenants", "domains", "mailboxes", "aliases", "alias_targets", "directory_state",
            "alembic_version"} <= names
    migrate(engine)  # idempotent


def test_mailbox_resolves_to_its_maildir(resolver: Resolver, tmp_path: Path) -> None:
    res = resolver.resolve("bob@acme.example")
    assert res.ok and addrs(res) == ["bob@acme.example"]
    assert res.mailboxes[0].maildir == tmp_path / "mail" / "acme" / "acme.example" / "bob"
    assert res.mailboxes[0].quota_bytes == 1000


def test_unknown_and_not_local(resolver: Resolver) -> None:
    assert resolver.resolve("nobody@acme.example").status == "unknown"
    assert resolver.resolve("bob@elsewhere.example").status == "not_local"
    assert resolver.resolve("not an address").status == "invalid"


def test_case_insensitive_local_part_and_domain(resolver: Resolver) -> None:
    res = resolver.resolve("<BoB@ACME.Example>")
    assert res.ok and addrs(res) == ["bob@acme.example"]


def test_alias_wins_over_mailbox(directory: Directory, resolver: Resolver) -> None:
    directory.alias_add("sales@acme.example", ["alice@acme.example"])
    assert addrs(resolver.resolve("sales@acme.example")) == ["alice@acme.example"]


def test_plus_tag_kept_as_detail(resolver: Resolver) -> None:
    res = resolver.resolve("bob+news@acme.example")
    assert addrs(res) == ["bob@acme.example"] and res.mailboxes[0].detail == "news"


def test_exact_mailbox_with_plus_beats_stripping(directory: Directory, resolver: Resolver) -> None:
    directory.mailbox_add("bob+special@acme.example", None)
    res = resolver.resolve("bob+special@acme.example")
    assert addrs(res) == ["bob+special@acme.example"] and res.mailboxes[0].detail is None


def test_plus_on_alias(directory: Directory, resolver: Resolver) -> None:
    directory.alias_add("team@acme.example", ["bob@acme.example", "alice@acme.example"])
    res = resolver.resolve("team+x@acme.example")
    assert sorted(addrs(res)) == ["alice@acme.example", "bob@acme.example"]
    assert {m.detail for m in res.mailboxes} == {"x"}


def test_custom_plus_separator(directory: Directory, tmp_path: Path) -> None:
    directory.tenant_add("dash")
    directory.domain_add("dash.example", "dash", plus_separator="-")
    directory.mailbox_add("joe@dash.example", None)
    res = Resolver(directory, tmp_path, check_interval=0).resolve("joe-list@dash.example")
    assert addrs(res) == ["joe@dash.example"] and res.mailboxes[0].detail == "list"


def test_catchall_is_last(directory: Directory, resolver: Resolver) -> None:
    directory.domain_set("acme.example", catchall="alice@acme.example")
    assert addrs(resolver.resolve("whoever@acme.example")) == ["alice@acme.example"]
    # a real mailbox and a +tag are not shadowed by the catch-all
    assert addrs(resolver.resolve("bob@acme.example")) == ["bob@acme.example"]
    assert addrs(resolver.resolve("bob+x@acme.example")) == ["bob@acme.example"]
    directory.domain_set("acme.example", catchall=None)
    assert resolver.resolve("whoever@acme.example").status == "unknown"


def test_alias_across_tenants_and_external(directory: Directory, resolver: Resolver) -> None:
    directory.alias_add("fwd@acme.example", ["carol@globex.example", "someone@gmail.example"])
    res = resolver.resolve("fwd@acme.example")
    assert addrs(res) == ["carol@globex.example"] and res.mailboxes[0].tenant == "globex"
    assert res.external == ["someone@gmail.example"]


def test_recursive_alias(directory: Directory, resolver: Resolver) -> None:
    directory.alias_add("a@acme.example", ["b@acme.example"])
    directory.alias_add("b@acme.example", ["c@acme.example", "bob@acme.example"])
    directory.alias_add("c@acme.example", ["alice@acme.example"])
    assert sorted(addrs(resolver.resolve("a@acme.example"))) == ["alice@acme.example", "bob@acme.example"]


def test_alias_loop_detected(directory: Directory, resolver: Resolver) -> None:
    directory.alias_add("x@acme.example", ["y@acme.example"])
    directory.alias_add("y@acme.example", ["x@acme.example"])
    res = resolver.resolve("x@acme.example")
    assert res.status == "loop" and not res.mailboxes


def test_loop_branch_dropped_rest_delivered(directory: Directory, resolver: Resolver) -> None:
    directory.alias_add("x@acme.example", ["y@acme.example"])
    directory.alias_add("y@acme.example", ["x@acme.example", "bob@acme.example"])
    res = resolver.resolve("x@acme.example")
    assert res.ok and addrs(res) == ["bob@acme.example"]


def test_alias_to_itself_delivers_to_own_mailbox(directory: Directory, resolver: Resolver) -> None:
    directory.alias_add("bob@acme.example", ["bob@acme.example", "alice@acme.example"])
    assert sorted(addrs(resolver.resolve("bob@acme.example"))) == ["alice@acme.example", "bob@acme.example"]


def test_depth_limit(directory: Directory, tmp_path: Path) -> None:
    for i in range(10):
        directory.alias_add(f"d{i}@acme.example", [f"d{i + 1}@acme.example"])
    directory.alias_add("d10@acme.example", ["bob@acme.example"])
    assert Resolver(directory, tmp_path, check_interval=0).resolve("d0@acme.example").ok
    res = Resolver(directory, tmp_path, depth_limit=5, check_interval=0).resolve("d0@acme.example")
    assert res.status == "loop" and "deeper than 5" in res.reason


def test_idn_domain_stored_as_alabel(directory: Directory, resolver: Resolver) -> None:
    directory.domain_add("bücher.example", "acme")
    assert directory.domain_get("xn--bcher-kva.example").name == "xn--bcher-kva.example"
    assert directory.domain_get("BÜCHER.example").display_name == "bücher.example"
    directory.mailbox_add("leser@bücher.example", None)
    assert addrs(resolver.resolve("Leser@xn--bcher-kva.example")) == ["leser@xn--bcher-kva.example"]
    assert addrs(resolver.resolve("leser@BÜCHER.EXAMPLE")) == ["leser@xn--bcher-kva.example"]


def test_postmaster_and_abuse_always_resolve(directory: Directory, resolver: Resolver, tmp_path: Path) -> None:
    for local in ("postmaster", "abuse", "Postmaster"):
        res = resolver.resolve(f"{local}@acme.example")
        assert res.ok and res.mailboxes[0].maildir == tmp_path / "mail" / "_system" / "postmaster"
    directory.domain_set("acme.example", postmaster="alice@acme.example")
    assert addrs(resolver.resolve("postmaster@acme.example")) == ["alice@acme.example"]
    assert addrs(resolver.resolve("abuse@acme.example")) == ["alice@acme.example"]
    directory.mailbox_add("abuse@acme.example", None)
    assert addrs(resolver.resolve("abuse@acme.example")) == ["abuse@acme.example"]


def test_postmaster_default_from_config(directory: Directory, tmp_path: Path) -> None:
    r = Resolver(directory, tmp_path, default_postmaster="carol@globex.example", check_interval=0)
    assert addrs(r.resolve("postmaster@acme.example")) == ["carol@globex.example"]


def test_disabled_mailbox_domain_and_tenant(directory: Directory, resolver: Resolver) -> None:
    directory.mailbox_set("bob@acme.example", enabled=False)
    assert resolver.resolve("bob@acme.example").status == "disabled"
    directory.tenant_set("globex", enabled=False)
    assert resolver.resolve("carol@globex.example").status == "disabled"


def test_cache_spares_the_database_and_sees_changes(directory: Directory, tmp_path: Path) -> None:
    r = Resolver(directory, tmp_path, check_interval=3600)
    r.resolve("bob@acme.example")
    before = r.db_lookups
    for _ in range(100):
        assert r.resolve("BOB@acme.example").ok
    assert r.db_lookups == before
    # another writer (another process in production) changes the directory: the generation moves
    other = Directory(directory.engine)
    other.mailbox_rm("bob@acme.example")
    r.invalidate()  # what the periodic generation check does; forced here instead of waiting
    assert r.resolve("bob@acme.example").status == "unknown"


def test_generation_check_drops_stale_entries(directory: Directory, tmp_path: Path) -> None:
    r = Resolver(directory, tmp_path, check_interval=0)
    assert r.resolve("newbie@acme.example").status == "unknown"
    Directory(directory.engine).mailbox_add("newbie@acme.example", None)
    assert r.resolve("newbie@acme.example").ok


def test_tenant_delete_needs_force(directory: Directory) -> None:
    with pytest.raises(DirectoryError, match="--force"):
        directory.tenant_rm("acme")
    assert directory.tenant_rm("acme", force=True) == 1
    assert [t["name"] for t in directory.tenant_list()] == ["globex"]


def test_bad_names_refused(directory: Directory) -> None:
    for bad in ("../etc", "Has Space", "", "-x"):
        with pytest.raises(DirectoryError):
            directory.tenant_add(bad)
    for bad in ("../../x@acme.example", "a/b@acme.example", ".x@acme.example", "x@nodot", "x@-bad-.example"):
        with pytest.raises(DirectoryError):
            directory.mailbox_add(bad, None)
    with pytest.raises(DirectoryError, match="not one of our domains"):
        directory.mailbox_add("x@unknown.example", None)
    with pytest.raises(DirectoryError, match="already exists"):
        directory.mailbox_add("BOB@acme.example", None)


def test_bare_postmaster_resolves(directory: Directory, resolver: Resolver, tmp_path: Path) -> None:
    """RFC 5321 §4.5.1: ``RCPT TO:<Postmaster>`` without a domain must be accepted."""
    for text in ("postmaster", "Postmaster", "<POSTMASTER>"):
        res = resolver.resolve(text)
        assert res.ok, res.reason
        assert res.mailboxes[0].maildir == tmp_path / "mail" / "_system" / "postmaster"
    r = Resolver(directory, tmp_path, default_postmaster="carol@globex.example", check_interval=0)
    assert addrs(r.resolve("postmaster")) == ["carol@globex.example"]
    assert resolver.resolve("abuse").status == "invalid"  # only postmaster has the domainless form


def test_unicode_normalisation_forms_reach_one_mailbox(directory: Directory, resolver: Resolver) -> None:
    """NFC and NFD spellings of a local part are one mailbox, not two look-alike directories."""
    import unicodedata

    nfc, nfd = unicodedata.normalize("NFC", "josé"), unicodedata.normalize("NFD", "josé")
    assert nfc != nfd
    directory.mailbox_add(f"{nfd}@acme.example", None)
    res = resolver.resolve(f"{nfc}@acme.example")
    assert res.ok and res.mailboxes[0].local_part == nfc
    with pytest.raises(Exception, match="exists|already|UNIQUE|unique"):
        directory.mailbox_add(f"{nfc}@acme.example", None)


TOKEN = "abcdefghijklmnopqrstuvwxyz234567"  # shaped like a reply token; resolution does not verify it


@pytest.mark.parametrize("local", ["reply", "unsubscribe", "bounce", "REPLY"])
def test_reply_token_addresses_go_to_the_tenants_replies_intake(resolver: Resolver, tmp_path: Path,
                                                                local: str) -> None:
    res = resolver.resolve(f"{local}+{TOKEN}@acme.example")
    assert res.ok
    (target,) = res.mailboxes
    assert target.tenant == "acme" and target.detail == TOKEN
    assert target.maildir == tmp_path / "mail" / "acme" / "_replies"
    assert target.address == f"{local.lower()}+{TOKEN}@acme.example"  # Delivered-To keeps the token
    # Each tenant's domains lead to that tenant's intake, never to another's.
    (other,) = resolver.resolve(f"reply+{TOKEN}@globex.example").mailboxes
    assert other.tenant == "globex" and other.maildir == tmp_path / "mail" / "globex" / "_replies"


def test_reply_tokens_come_before_the_catchall(directory: Directory, resolver: Resolver, tmp_path: Path) -> None:
    directory.domain_set("acme.example", catchall="alice@acme.example")
    assert [m.maildir.name for m in resolver.resolve(f"reply+{TOKEN}@acme.example").mailboxes] == ["_replies"]
    assert addrs(resolver.resolve("reply@acme.example")) == ["alice@acme.example"]  # no token: as before
    assert [m.maildir.name for m in resolver.resolve(f"bounce+{TOKEN}@acme.example").mailboxes] == ["_replies"]
    assert addrs(resolver.resolve("news+x@acme.example")) == ["alice@acme.example"]  # other prefixes: as before


def test_a_reply_mailbox_or_alias_made_by_hand_still_wins(directory: Directory, resolver: Resolver) -> None:
    directory.mailbox_add("reply@acme.example", None)
    assert addrs(resolver.resolve(f"reply+{TOKEN}@acme.example")) == ["reply@acme.example"]
    directory.alias_add("unsubscribe@acme.example", ["bob@acme.example"])
    assert addrs(resolver.resolve(f"unsubscribe+{TOKEN}@acme.example")) == ["bob@acme.example"]


def test_reply_without_a_token_and_disabled_domains_are_not_routed(directory: Directory,
                                                                   resolver: Resolver) -> None:
    assert resolver.resolve("reply+@acme.example").status == "unknown"
    assert resolver.resolve("reply@acme.example").status == "unknown"
    assert resolver.resolve("replies+x@acme.example").status == "unknown"
    directory.domain_set("acme.example", enabled=False)
    assert resolver.resolve(f"reply+{TOKEN}@acme.example").status == "disabled"


def test_reply_token_rule_does_not_depend_on_the_plus_separator(directory: Directory, tmp_path: Path) -> None:
    """The send API always writes ``reply+<token>@``, whatever separator the domain uses for +tags."""
    directory.tenant_add("dash")
    directory.domain_add("dash.example", "dash", plus_separator="-")
    res = Resolver(directory, tmp_path, check_interval=0).resolve(f"reply+{TOKEN}@dash.example")
    assert [(m.tenant, m.maildir.name) for m in res.mailboxes] == [("dash", "_replies")]
