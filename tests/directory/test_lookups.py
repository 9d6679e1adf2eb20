"""The directory's questions (tenant by name, a domain's tenant, ours or not, a mailbox's owner, ...) on
SQLite and PostgreSQL, with one rule for case: tenant names and domains case-insensitive, domains as A-labels."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from dovetail.db import make_engine, migrate
from dovetail.directory import Directory, MailboxOwner, lookups

IDN = "xn--bcher-kva.example"  # bücher.example


@pytest.fixture
def directory(database_url: str) -> Iterator[Directory]:
    engine = make_engine(database_url)
    migrate(engine)
    d = Directory(engine)
    d.tenant_add("ACME", "Acme Inc")  # stored as acme
    d.tenant_add("globex")
    d.domain_add("Example.COM", "Acme")
    d.domain_add("Bücher.Example", "acme")
    d.domain_add("globex.example", "GLOBEX")
    d.mailbox_add("Bob@Example.com", None)
    d.mailbox_add("anna@bücher.example", None)
    d.mailbox_add("gina@globex.example", None)
    d.alias_add("sales@example.com", ["bob@example.com"])
    yield d
    engine.dispose()


def test_tenant_id_and_get_ignore_case(directory: Directory) -> None:
    tid = directory.tenant_id("acme")
    assert tid is not None and tid != directory.tenant_id("globex")
    for spelling in ("acme", "ACME", " Acme "):
        assert directory.tenant_id(spelling) == tid, spelling
        row = directory.tenant_get(spelling)
        assert row == {"name": "acme", "display_name": "Acme Inc", "enabled": True, "domains": 2,
                       "suppressed_recipients": "reject", "home_node": None, "dmarc_enforce": None,
                       "spam_reject": None, "spam_greylist": None, "spam_rewrite_subject": None,
                       "spam_add_header": None, "reply_spam": "event", "greylist": None}, spelling


def test_unknown_tenant_is_none(directory: Directory) -> None:
    assert directory.tenant_id("nobody") is None
    assert directory.tenant_get("nobody") is None
    assert directory.tenant_ref("nobody") is None
    assert directory.tenant_ref(10_000) is None
    assert directory.tenant_domains("nobody") == []


def test_tenant_ref_by_name_or_id_gives_the_canonical_name(directory: Directory) -> None:
    ref = directory.tenant_ref("ACME")
    assert ref is not None and ref.name == "acme" and ref.enabled
    assert directory.tenant_ref(ref.id) == ref
    directory.tenant_set("acme", enabled=False)
    assert directory.tenant_ref("Acme") == lookups.TenantRef(ref.id, "acme", False)


def test_tenant_domains_are_a_labels_sorted(directory: Directory) -> None:
    assert directory.tenant_domains("ACME") == ["example.com", IDN]
    assert directory.tenant_domains("globex") == ["globex.example"]


def test_domain_tenant_and_is_local_ignore_case_and_idn_form(directory: Directory) -> None:
    for spelling in ("example.com", "Example.COM", "EXAMPLE.com.", "bücher.example", "BÜCHER.example", IDN,
                     IDN.upper()):
        assert directory.domain_tenant(spelling) == "acme", spelling
        assert directory.domain_tenant(spelling, enabled_only=True) == "acme", spelling
        assert directory.is_local_domain(spelling), spelling
    assert directory.domain_tenant("Globex.Example") == "globex"


def test_foreign_or_invalid_domains_are_not_ours(directory: Directory) -> None:
    for spelling in ("elsewhere.example", "not a domain", "", "com", "bob@example.com"):
        assert directory.domain_tenant(spelling) is None, spelling
        assert not directory.is_local_domain(spelling), spelling


def test_disabled_domain_or_tenant_owns_nothing_for_senders(directory: Directory) -> None:
    directory.domain_set("example.com", enabled=False)
    assert directory.domain_tenant("Example.COM") == "acme"
    assert directory.domain_tenant("Example.COM", enabled_only=True) is None
    assert directory.is_local_domain("Example.COM")  # still ours: mail to it is refused, not relayed
    assert directory.domain_tenant("bücher.example", enabled_only=True) == "acme"
    directory.tenant_set("ACME", enabled=False)
    assert directory.domain_tenant("bücher.example", enabled_only=True) is None
    assert directory.domain_tenant("globex.example", enabled_only=True) == "globex"


def test_mailbox_owner_ignores_case_and_gives_the_a_label(directory: Directory) -> None:
    bob = MailboxOwner("bob@example.com", "acme", "example.com", "bob", True)
    for spelling in ("bob@example.com", "Bob@Example.COM", "<BOB@EXAMPLE.COM>"):
        assert directory.mailbox_owner(spelling) == bob, spelling
    anna = MailboxOwner(f"anna@{IDN}", "acme", IDN, "anna", True)
    for spelling in ("anna@bücher.example", "Anna@BÜCHER.Example", f"ANNA@{IDN.upper()}"):
        assert directory.mailbox_owner(spelling) == anna, spelling
    assert directory.mailbox_owner("Gina@Globex.example") == MailboxOwner(
        "gina@globex.example", "globex", "globex.example", "gina", True)


def test_mailbox_owner_unknown_invalid_alias_and_disabled(directory: Directory) -> None:
    assert directory.mailbox_owner("nobody@example.com") is None
    assert directory.mailbox_owner("sales@example.com") is None  # an alias is not a mailbox
    assert directory.mailbox_owner("not an address") is None
    assert directory.mailbox_owner("bob@elsewhere.example") is None
    directory.tenant_set("acme", enabled=False)
    owner = directory.mailbox_owner("bob@example.com")
    assert owner is not None and owner.tenant == "acme" and not owner.enabled


def test_mailbox_get_gives_the_login_row(directory: Directory) -> None:
    directory.mailbox_set("bob@example.com", password_hash="{PLAIN}pw", quota_bytes=5000)
    want = {"local_part": "bob", "domain": "example.com", "tenant": "acme", "password_hash": "{PLAIN}pw",
            "quota_bytes": 5000, "home_node": None, "paused": False, "enabled": True}
    for spelling in ("bob@example.com", "BOB@Example.COM"):
        assert directory.mailbox_get(spelling) == want, spelling
    anna = directory.mailbox_get("Anna@BÜCHER.Example")
    assert anna is not None and (anna["local_part"], anna["domain"]) == ("anna", IDN)
    assert directory.mailbox_get("nobody@example.com") is None and directory.mailbox_get("bad address") is None
    with directory.engine.begin() as conn:
        conn.execute(sa.text("UPDATE tenants SET paused=:p WHERE name='acme'"), {"p": True})
    directory.domain_set("example.com", enabled=False)
    row = directory.mailbox_get("bob@example.com")
    assert row is not None and row["paused"] is True and row["enabled"] is False


def test_listings_filter_by_tenant_in_any_case(directory: Directory) -> None:
    assert [d.name for d in directory.domain_list("ACME")] == ["example.com", IDN]
    assert [m["address"] for m in directory.mailbox_list(tenant="Acme")] == ["bob@example.com", f"anna@{IDN}"]
    assert [a["source"] for a in directory.alias_list(tenant="ACME")] == ["sales@example.com"]
    assert [m["address"] for m in directory.mailbox_list(domain="BÜCHER.example")] == [f"anna@{IDN}"]


def test_counts_of_all_or_one_tenant_in_any_case(directory: Directory) -> None:
    assert directory.counts() == {"tenants": 2, "domains": 3, "mailboxes": 3, "aliases": 1}
    assert directory.counts("ACME") == {"tenants": 1, "domains": 2, "mailboxes": 2, "aliases": 1}
    assert directory.counts("globex") == {"tenants": 1, "domains": 1, "mailboxes": 1, "aliases": 0}
    assert directory.counts("nobody") == {"tenants": 0, "domains": 0, "mailboxes": 0, "aliases": 0}


# --- the join helper, as another package's table with foreign keys would use it ----------------

@pytest.fixture
def notes(directory: Directory) -> Iterator[sa.Table]:
    """A table of another package: rows that point at a tenant (or none) and at a domain."""
    md = sa.MetaData()
    table = sa.Table("test_notes", md, sa.Column("id", sa.Integer, primary_key=True),
                     sa.Column("tenant_id", sa.Integer, nullable=True), sa.Column("domain_id", sa.Integer))
    md.create_all(directory.engine)
    acme, globex = directory.tenant_id("acme"), directory.tenant_id("globex")
    with directory.engine.begin() as conn:
        ex, idn, gx = (lookups.domain_id(conn, d) for d in ("example.com", "bücher.example", "globex.example"))
        conn.execute(table.insert(), [{"id": 1, "tenant_id": acme, "domain_id": ex},
                                      {"id": 2, "tenant_id": globex, "domain_id": gx},
                                      {"id": 3, "tenant_id": None, "domain_id": idn}])
    yield table
    md.drop_all(directory.engine)


def test_tenant_and_domain_names_of_foreign_keys(directory: Directory, notes: sa.Table) -> None:
    query = sa.select(notes.c.id, lookups.tenant_name_of(notes.c.tenant_id).label("tenant"),
                      lookups.tenant_enabled_of(notes.c.tenant_id).label("enabled"),
                      lookups.domain_name_of(notes.c.domain_id).label("domain")).order_by(notes.c.id)
    directory.tenant_set("globex", enabled=False)
    with directory.engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(query)]
    assert rows == [(1, "acme", True, "example.com"), (2, "globex", False, "globex.example"), (3, None, None, IDN)]


def test_filters_by_tenant_and_domain_name(directory: Directory, notes: sa.Table) -> None:
    cases = [("ACME", "EXAMPLE.COM", [1]), ("acme", "bücher.example", []), ("Globex", "globex.example", [2]),
             ("nobody", "example.com", [])]
    with directory.engine.connect() as conn:
        for tenant, domain, ids in cases:
            query = (sa.select(notes.c.id).where(lookups.tenant_named(notes.c.tenant_id, tenant),
                                                 lookups.domain_named(notes.c.domain_id, domain)))
            assert list(conn.execute(query).scalars()) == ids, (tenant, domain)


def test_domain_filter_by_u_label_and_invalid_name(directory: Directory, notes: sa.Table) -> None:
    with directory.engine.connect() as conn:
        by_idn = sa.select(notes.c.id).where(lookups.domain_named(notes.c.domain_id, "BÜCHER.example"))
        assert list(conn.execute(by_idn).scalars()) == [3]
        invalid = sa.select(notes.c.id).where(lookups.domain_named(notes.c.domain_id, "not a domain"))
        assert list(conn.execute(invalid).scalars()) == []


def test_lookups_join_the_callers_transaction(directory: Directory) -> None:
    """A tenant added in an open transaction is visible to a lookup on that same connection."""
    from dovetail.directory.schema import tenants

    with directory.engine.connect() as conn:
        transaction = conn.begin()
        conn.execute(tenants.insert().values(name="initech", display_name="Initech"))
        ref = lookups.tenant_ref(conn, "INITECH")
        assert ref is not None and ref.name == "initech"
        assert lookups.tenant_id(conn, "Initech") == ref.id
        transaction.rollback()
    assert directory.tenant_id("initech") is None
