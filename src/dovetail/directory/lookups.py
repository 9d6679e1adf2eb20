"""The directory's answers on a caller's connection, and the SQL that names tenants in other tables.

Other packages keep tables of their own with a foreign key to ``tenants`` or ``domains`` (campaigns,
API tokens, SMTP credentials, DKIM keys, ...). They ask the directory through this module, or through
:class:`~dovetail.directory.Directory` which asks the same questions on its own connection, instead of
querying the directory's tables. That keeps one rule for matching names: a tenant name compares
case-insensitively (:func:`~dovetail.directory.addresses.normalize_tenant`), a domain as a lowercase
A-label (:func:`~dovetail.directory.addresses.normalize_domain`), so ``ACME``/``acme`` and
``Bücher.Example``/``xn--bcher-kva.example`` find the same row everywhere.

The functions take a ``Connection`` so that a caller can ask inside its own transaction. Each is one
indexed query. The ``*_of`` and ``*_named`` expressions are the join helper: correlated subqueries on
the primary key that a listing of another package's table selects, orders or filters by, in the same
single statement a join would be, without knowing the directory's tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .addresses import AddressError, normalize_domain, normalize_tenant
from .schema import domains, tenants


@dataclass(frozen=True)
class TenantRef:
    """A tenant as other packages need it: its id for their foreign keys, its canonical name."""

    id: int
    name: str
    enabled: bool


def lookup_domain_name(domain: str) -> str | None:
    """The stored form of ``domain`` (lowercase A-label), or None when it cannot be one of ours."""
    try:
        return normalize_domain(domain)
    except AddressError:
        return None


def tenant_ref(conn: Connection, tenant: str | int) -> TenantRef | None:
    """The tenant named ``tenant`` (any case) or with id ``tenant``, or None."""
    column = tenants.c.id if isinstance(tenant, int) else tenants.c.name
    key = tenant if isinstance(tenant, int) else normalize_tenant(tenant)
    row = conn.execute(sa.select(tenants.c.id, tenants.c.name, tenants.c.enabled).where(column == key)).first()
    return TenantRef(int(row.id), row.name, bool(row.enabled)) if row is not None else None


def tenant_id(conn: Connection, tenant: str) -> int | None:
    """The id of the tenant named ``tenant`` (any case), or None."""
    found = conn.execute(sa.select(tenants.c.id).where(tenants.c.name == normalize_tenant(tenant))).scalar()
    return int(found) if found is not None else None


def tenant_home(conn: Connection, tenant: str) -> str | None:
    """The home mailbox node of the tenant named ``tenant`` (None: unknown, or a single installation)."""
    return conn.execute(sa.select(tenants.c.home_node).where(tenants.c.name == normalize_tenant(tenant))).scalar()


def reply_spam_policy(conn: Connection, tenant_id: int) -> str:
    """What the replies engine does with a message our content filter flagged as spam: ``event``
    (a ``reply.spam`` event instead of a reply event) or ``drop`` (stored, no event)."""
    found = conn.execute(sa.select(tenants.c.reply_spam).where(tenants.c.id == tenant_id)).scalar()
    return str(found or "event")


def domain_id(conn: Connection, domain: str) -> int | None:
    """The id of ``domain`` (any case, U- or A-label) when it is one of ours, or None."""
    dom = lookup_domain_name(domain)
    if dom is None:
        return None
    found = conn.execute(sa.select(domains.c.id).where(domains.c.name == dom)).scalar()
    return int(found) if found is not None else None


def domain_tenant(conn: Connection, domain: str, *, enabled_only: bool = False) -> str | None:
    """The name of the tenant owning ``domain``, or None when it is not ours.

    With ``enabled_only`` a disabled domain or tenant owns nothing: the question senders ask ("may this
    tenant send as this domain?").
    """
    dom = lookup_domain_name(domain)
    if dom is None:
        return None
    query = sa.select(tenants.c.name).select_from(domains.join(tenants)).where(domains.c.name == dom)
    if enabled_only:
        query = query.where(domains.c.enabled, tenants.c.enabled)
    return conn.execute(query).scalar()


# --- the join helper: tenant and domain names in other packages' queries ---------------------------

def tenant_name_of(tenant_id_column: Any) -> Any:
    """The tenant name for a ``tenant_id`` column of another table (NULL when the id is NULL)."""
    return sa.select(tenants.c.name).where(tenants.c.id == tenant_id_column).scalar_subquery()


def tenant_enabled_of(tenant_id_column: Any) -> Any:
    """Whether the tenant of a ``tenant_id`` column is enabled (NULL when the id is NULL)."""
    return sa.select(tenants.c.enabled).where(tenants.c.id == tenant_id_column).scalar_subquery()


def tenant_named(tenant_id_column: Any, tenant: str) -> Any:
    """A filter: the ``tenant_id`` column points at the tenant named ``tenant`` (any case)."""
    wanted = sa.select(tenants.c.id).where(tenants.c.name == normalize_tenant(tenant)).scalar_subquery()
    return tenant_id_column == wanted


def domain_name_of(domain_id_column: Any) -> Any:
    """The stored (A-label) name for a ``domain_id`` column of another table."""
    return sa.select(domains.c.name).where(domains.c.id == domain_id_column).scalar_subquery()


def domain_named(domain_id_column: Any, domain: str) -> Any:
    """A filter: the ``domain_id`` column points at ``domain`` (any case, U- or A-label)."""
    dom = lookup_domain_name(domain)
    if dom is None:
        return sa.false()
    return domain_id_column == sa.select(domains.c.id).where(domains.c.name == dom).scalar_subquery()
