"""Directory writes, listings and lookups: tenants, domains, mailboxes, aliases, catch-all.

This is the one door to the directory's tables: other packages ask a method here (or, inside a
transaction of their own, :mod:`dovetail.directory.lookups`) rather than querying them, so names
match by one rule everywhere: tenant names and domains case-insensitively, domains as A-labels.

Every write bumps ``directory_state.generation`` in the same transaction, which is how resolver
caches in other processes (SMTP workers) learn that what they hold is stale.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from ..dbrows import inserted_id
from . import lookups
from .addresses import (
    AddressError,
    check_tenant_name,
    display_domain,
    normalize_address,
    normalize_domain,
    normalize_tenant,
    split_address,
)
from .nodes import NodeError, place
from .schema import alias_targets, aliases, directory_state, domains, mailboxes, tenants

# What submission does with a recipient on the tenant's suppression list (the tenant's choice):
# refuse it at RCPT TO with 550 5.7.1, or accept it and leave it out of the queued message.
SUPPRESSED_RECIPIENTS = ("reject", "drop")
# The mode of a domain's MTA-STS policy (RFC 8461 §5): senders report only, refuse non-TLS, or withdraw.
MTA_STS_MODES = ("testing", "enforce", "none")


class Unset:
    """The type of :data:`UNSET`: a setting the caller does not change (None is a value: "inherit")."""


UNSET = Unset()
SPAM_THRESHOLDS = ("reject", "greylist", "rewrite_subject", "add_header")  # tenants.spam_<name>
REPLY_SPAM = ("event", "drop")  # a reply our filter flagged as spam: "reply.spam" event, or nothing


class DirectoryError(ValueError):
    """A refused directory change (unknown name, duplicate, dependants without --force)."""


@dataclass(frozen=True)
class DomainInfo:
    id: int
    name: str
    tenant: str
    enabled: bool
    catchall: str | None
    plus_separator: str
    postmaster: str | None
    dmarc_enforce: bool | None = None  # the domain's own setting; None: its tenant's
    tenant_dmarc_enforce: bool | None = None  # the tenant's setting; None: mx.dmarc_enforce
    home_node: str | None = None  # the tenant's mailbox node; None on a single installation
    paused: bool = False  # a move of the tenant is in its final sync: deliveries wait (4.2.0)
    moved_from: str | None = None  # the node the tenant last moved away from
    mta_sts_mode: str = "testing"
    greylist: bool | None = None  # the domain's own switch (None: its tenant's)
    tenant_greylist: bool | None = None  # the tenant's switch (None: the MX's mx.greylist.enabled)

    @property
    def greylist_effective(self) -> bool | None:
        """On or off as the domain or else its tenant says; None leaves it to the MX's default."""
        return self.greylist if self.greylist is not None else self.tenant_greylist

    @property
    def display_name(self) -> str:
        return display_domain(self.name)

    @property
    def dmarc_enforce_setting(self) -> tuple[bool | None, str]:
        """Whether senders' DMARC policies are enforced for mail to this domain and whose setting says so:
        ``(value, "domain")``, ``(value, "tenant")``, or ``(None, "global")`` for ``mx.dmarc_enforce``."""
        if self.dmarc_enforce is not None:
            return self.dmarc_enforce, "domain"
        if self.tenant_dmarc_enforce is not None:
            return self.tenant_dmarc_enforce, "tenant"
        return None, "global"


@dataclass(frozen=True)
class MailboxOwner:
    """Where a mailbox belongs: its canonical address, tenant and (A-label) domain."""

    address: str
    tenant: str
    domain: str
    local_part: str
    enabled: bool  # the mailbox, its domain and its tenant are all enabled


def _bump(conn: Connection) -> None:
    conn.execute(directory_state.update().values(generation=directory_state.c.generation + 1))


def generation(conn: Connection) -> int:
    return int(conn.execute(sa.select(directory_state.c.generation)).scalar_one())


# The login lookup (``Directory.mailbox_get``), with the names its row is read by.
_MAILBOX_COLUMNS = ("local_part", "domain", "tenant", "password_hash", "quota_bytes", "home_node", "paused", "enabled")
_MAILBOX_ROW = (sa.select(mailboxes.c.local_part, domains.c.name.label("domain"), tenants.c.name.label("tenant"),
                          mailboxes.c.password_hash, mailboxes.c.quota_bytes, tenants.c.home_node, tenants.c.paused,
                          (mailboxes.c.enabled & domains.c.enabled & tenants.c.enabled).label("enabled"))
                .select_from(mailboxes.join(domains).join(tenants))
                .where(domains.c.name == sa.bindparam("dom"), mailboxes.c.local_part == sa.bindparam("local")))


class Directory:
    """CRUD over the directory tables; one instance per engine, safe to share between threads."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._mailbox_sql: tuple[str, tuple[str, ...] | None] | None = None

    # --- tenants -------------------------------------------------------------------------------

    def tenant_add(self, name: str, display_name: str = "", enabled: bool = True,
                   node: str | None = None) -> dict[str, Any]:
        """Add a tenant, placed on ``node`` or on the least used mailbox node (none on a single node)."""
        slug = _checked(check_tenant_name, name)
        with self.engine.begin() as conn:
            if conn.execute(sa.select(tenants.c.id).where(tenants.c.name == slug)).first():
                raise DirectoryError(f"tenant {slug!r} already exists")
            try:
                home = place(conn, node)
            except NodeError as exc:
                raise DirectoryError(str(exc)) from None
            conn.execute(tenants.insert().values(name=slug, display_name=display_name or slug, enabled=enabled,
                                                 home_node=home))
            _bump(conn)
        return {"name": slug, "display_name": display_name or slug, "enabled": enabled, "home_node": home}

    def tenant_list(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(_tenant_select().order_by(tenants.c.name))
            return [dict(r._mapping) for r in rows]

    def tenant_get(self, name: str) -> dict[str, Any] | None:
        """The tenant named ``name`` (any case) as a :meth:`tenant_list` row, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(_tenant_select().where(tenants.c.name == normalize_tenant(name))).first()
        return dict(row._mapping) if row else None

    def tenant_id(self, name: str) -> int | None:
        """The id of the tenant named ``name`` (any case), for other tables' foreign keys; or None."""
        with self.engine.connect() as conn:
            return lookups.tenant_id(conn, name)

    def tenant_ref(self, tenant: str | int) -> lookups.TenantRef | None:
        """Id, canonical name and state of the tenant named ``tenant`` (any case) or with that id; or None."""
        with self.engine.connect() as conn:
            return lookups.tenant_ref(conn, tenant)

    def tenant_domains(self, name: str) -> list[str]:
        """The (A-label) domains of the tenant named ``name`` (any case), sorted; empty for no such tenant."""
        query = (sa.select(domains.c.name).select_from(domains.join(tenants))
                 .where(tenants.c.name == normalize_tenant(name)).order_by(domains.c.name))
        with self.engine.connect() as conn:
            return list(conn.execute(query).scalars())

    def tenant_set(self, name: str, *, enabled: bool | None = None, display_name: str | None = None,
                   suppressed_recipients: str | None = None, dmarc_enforce: bool | None | Unset = UNSET,
                   spam: dict[str, float | None] | None = None, reply_spam: str | None = None,
                   greylist: bool | None | str = "keep") -> None:
        """Change a tenant's settings; ``suppressed_recipients`` is one of :data:`SUPPRESSED_RECIPIENTS`;
        ``dmarc_enforce`` None means: follow ``mx.dmarc_enforce`` (left as it is when not given); ``spam``
        maps names of :data:`SPAM_THRESHOLDS` to a score (None clears it), ``reply_spam`` is one of
        :data:`REPLY_SPAM`; ``greylist`` True/False, or None to inherit the MX's default
        (``"keep"``: unchanged)."""
        values: dict[str, Any] = {}
        if greylist != "keep":
            values["greylist"] = greylist
        if not isinstance(dmarc_enforce, Unset):
            values["dmarc_enforce"] = dmarc_enforce
        for key, score in (spam or {}).items():
            if key not in SPAM_THRESHOLDS:
                raise DirectoryError(f"spam threshold {key!r} is not one of {', '.join(SPAM_THRESHOLDS)}")
            if score is not None and not math.isfinite(score):
                raise DirectoryError(f"spam threshold {key}: {score!r} is not a number")
            values[f"spam_{key}"] = score
        if reply_spam is not None:
            if reply_spam not in REPLY_SPAM:
                raise DirectoryError(f"reply spam: {reply_spam!r} is not one of {', '.join(REPLY_SPAM)}")
            values["reply_spam"] = reply_spam
        if enabled is not None:
            values["enabled"] = enabled
        if display_name is not None:
            values["display_name"] = display_name
        if suppressed_recipients is not None:
            if suppressed_recipients not in SUPPRESSED_RECIPIENTS:
                raise DirectoryError(f"suppressed recipients: {suppressed_recipients!r} is not one of "
                                     f"{', '.join(SUPPRESSED_RECIPIENTS)}")
            values["suppressed_recipients"] = suppressed_recipients
        with self.engine.begin() as conn:
            tid = self._tenant_id(conn, name)
            if values:
                conn.execute(tenants.update().where(tenants.c.id == tid).values(**values))
                _bump(conn)

    def tenant_spam_policy(self, name: str) -> dict[str, Any] | None:
        """The tenant's spam thresholds (``reject``, ``greylist``, ``rewrite_subject``, ``add_header``: a
        score or None) and ``reply_spam``; None for no such tenant. One query on the unique name."""
        cols = [getattr(tenants.c, f"spam_{k}") for k in SPAM_THRESHOLDS]
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(*cols, tenants.c.reply_spam)
                               .where(tenants.c.name == normalize_tenant(name))).first()
        if row is None:
            return None
        policy: dict[str, Any] = dict(zip(SPAM_THRESHOLDS, row[:-1], strict=True))
        policy["reply_spam"] = row[-1]
        return policy

    def tenant_suppressed_recipients(self, name: str) -> str | None:
        """The tenant's policy for suppressed recipients at submission (``reject``/``drop``), or None for
        no such tenant. One query on the tenants' unique name."""
        with self.engine.connect() as conn:
            return conn.execute(sa.select(tenants.c.suppressed_recipients)
                                .where(tenants.c.name == normalize_tenant(name))).scalar()

    def tenant_rm(self, name: str, force: bool = False) -> int:
        """Delete a tenant; refused while it owns domains unless ``force``. Returns domains removed."""
        with self.engine.begin() as conn:
            tid = self._tenant_id(conn, name)
            count = conn.execute(sa.select(sa.func.count()).select_from(domains)
                                 .where(domains.c.tenant_id == tid)).scalar_one()
            if count and not force:
                raise DirectoryError(f"tenant {name!r} still owns {count} domain(s); use --force to delete them too")
            for (did,) in conn.execute(sa.select(domains.c.id).where(domains.c.tenant_id == tid)).all():
                self._delete_domain_rows(conn, did)
            conn.execute(tenants.delete().where(tenants.c.id == tid))
            _bump(conn)
        return int(count)

    def counts(self, tenant: str | None = None) -> dict[str, int]:
        """How many tenants, domains, mailboxes and aliases there are (of one tenant, any case, when named)."""
        def number(table: sa.Table, *joins: sa.Table) -> int:
            source: Any = table
            for other in joins:
                source = source.join(other)
            query = sa.select(sa.func.count()).select_from(source)
            if tenant is not None:
                query = query.where(tenants.c.name == normalize_tenant(tenant))
            return int(conn.execute(query).scalar_one())

        with self.engine.connect() as conn:
            return {"tenants": number(tenants), "domains": number(domains, tenants),
                    "mailboxes": number(mailboxes, domains, tenants), "aliases": number(aliases, domains, tenants)}

    def _tenant_id(self, conn: Connection, name: str) -> int:
        tid = lookups.tenant_id(conn, name)
        if tid is None:
            raise DirectoryError(f"no such tenant {name!r}")
        return int(tid)

    # --- domains -------------------------------------------------------------------------------

    def domain_add(self, name: str, tenant: str, postmaster: str | None = None,
                   plus_separator: str = "+", enabled: bool = True) -> DomainInfo:
        dom = _checked(normalize_domain, name)
        if postmaster:
            postmaster = _checked(normalize_address, postmaster)
        if len(plus_separator) != 1 or plus_separator.isalnum() or plus_separator in "@/.\\\"":
            raise DirectoryError(f"plus separator {plus_separator!r}: must be one character such as + or -")
        with self.engine.begin() as conn:
            tid = self._tenant_id(conn, tenant)
            if conn.execute(sa.select(domains.c.id).where(domains.c.name == dom)).first():
                raise DirectoryError(f"domain {display_domain(dom)!r} already exists")
            conn.execute(domains.insert().values(name=dom, tenant_id=tid, enabled=enabled,
                                                 postmaster=postmaster, plus_separator=plus_separator))
            _bump(conn)
        return self.domain_get(dom)

    def domain_get(self, name: str) -> DomainInfo:
        dom = _checked(normalize_domain, name)
        with self.engine.connect() as conn:
            row = conn.execute(_domain_select().where(domains.c.name == dom)).first()
        if row is None:
            raise DirectoryError(f"no such domain {name!r}")
        return DomainInfo(**row._mapping)

    def domain_list(self, tenant: str | None = None) -> list[DomainInfo]:
        query = _domain_select().order_by(domains.c.name)
        if tenant:
            query = query.where(tenants.c.name == normalize_tenant(tenant))
        with self.engine.connect() as conn:
            return [DomainInfo(**r._mapping) for r in conn.execute(query)]

    def domain_tenant(self, domain: str, *, enabled_only: bool = False) -> str | None:
        """The tenant owning ``domain`` (any case, U- or A-label), or None when it is not ours.

        With ``enabled_only`` a disabled domain or tenant owns nothing (may this tenant send as it?).
        """
        with self.engine.connect() as conn:
            return lookups.domain_tenant(conn, domain, enabled_only=enabled_only)

    def is_local_domain(self, domain: str) -> bool:
        """Whether ``domain`` (any case, U- or A-label) is one of ours, enabled or not."""
        with self.engine.connect() as conn:
            return lookups.domain_id(conn, domain) is not None

    def domain_set(self, name: str, **values: Any) -> DomainInfo:
        """Change enabled/catchall/postmaster/plus_separator/dmarc_enforce/mta_sts_mode/greylist of a domain."""
        dom = _checked(normalize_domain, name)
        if "mta_sts_mode" in values and values["mta_sts_mode"] not in MTA_STS_MODES:
            raise DirectoryError(f"MTA-STS mode {values['mta_sts_mode']!r}: expected one of {', '.join(MTA_STS_MODES)}")
        if values.get("catchall"):
            values["catchall"] = _checked(normalize_address, values["catchall"])
        if values.get("postmaster"):
            values["postmaster"] = _checked(normalize_address, values["postmaster"])
        with self.engine.begin() as conn:
            result = conn.execute(domains.update().where(domains.c.name == dom).values(**values))
            if result.rowcount == 0:
                raise DirectoryError(f"no such domain {name!r}")
            _bump(conn)
        return self.domain_get(dom)

    def domain_rm(self, name: str, force: bool = False) -> None:
        dom = _checked(normalize_domain, name)
        with self.engine.begin() as conn:
            did = conn.execute(sa.select(domains.c.id).where(domains.c.name == dom)).scalar()
            if did is None:
                raise DirectoryError(f"no such domain {name!r}")
            n = conn.execute(sa.select(sa.func.count()).select_from(mailboxes)
                             .where(mailboxes.c.domain_id == did)).scalar_one()
            if n and not force:
                raise DirectoryError(f"domain {name!r} still has {n} mailbox(es); use --force to delete them too")
            self._delete_domain_rows(conn, did)
            _bump(conn)

    def _delete_domain_rows(self, conn: Connection, did: int) -> None:
        alias_ids = sa.select(aliases.c.id).where(aliases.c.domain_id == did)
        conn.execute(alias_targets.delete().where(alias_targets.c.alias_id.in_(alias_ids)))
        conn.execute(aliases.delete().where(aliases.c.domain_id == did))
        conn.execute(mailboxes.delete().where(mailboxes.c.domain_id == did))
        conn.execute(domains.delete().where(domains.c.id == did))

    def _domain_id(self, conn: Connection, dom: str) -> int:
        did = conn.execute(sa.select(domains.c.id).where(domains.c.name == dom)).scalar()
        if did is None:
            raise DirectoryError(
                f"{display_domain(dom)!r} is not one of our domains (add it with `dovetail domain add`)")
        return int(did)

    # --- mailboxes -----------------------------------------------------------------------------

    def mailbox_add(self, address: str, password_hash: str | None, quota_bytes: int = 0,
                    enabled: bool = True) -> str:
        local, dom = _checked(split_address, address)
        with self.engine.begin() as conn:
            did = self._domain_id(conn, dom)
            if conn.execute(sa.select(mailboxes.c.id).where(mailboxes.c.domain_id == did,
                                                            mailboxes.c.local_part == local)).first():
                raise DirectoryError(f"mailbox {local}@{dom} already exists")
            conn.execute(mailboxes.insert().values(domain_id=did, local_part=local, password_hash=password_hash,
                                                   quota_bytes=quota_bytes, enabled=enabled))
            _bump(conn)
        return f"{local}@{dom}"

    def mailbox_list(self, domain: str | None = None, tenant: str | None = None) -> list[dict[str, Any]]:
        query = (sa.select((mailboxes.c.local_part + "@" + domains.c.name).label("address"),
                           tenants.c.name.label("tenant"), mailboxes.c.quota_bytes, mailboxes.c.enabled)
                 .select_from(mailboxes.join(domains).join(tenants))
                 .order_by(domains.c.name, mailboxes.c.local_part))
        if domain:
            query = query.where(domains.c.name == _checked(normalize_domain, domain))
        if tenant:
            query = query.where(tenants.c.name == normalize_tenant(tenant))
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def paused_tenants(self) -> set[str]:
        """Tenants whose move is in its final sync (their deliveries wait, their IMAP sessions end)."""
        with self.engine.connect() as conn:
            return set(conn.execute(sa.select(tenants.c.name).where(tenants.c.paused)).scalars())

    def mailbox_get(self, address: str) -> dict[str, Any] | None:
        """The mailbox row (with tenant and domain) for login, or None.

        Every IMAP and submission login asks this: the statement is compiled once per directory and
        run as its SQL text on the driver's cursor (building and compiling it each time cost 0.3-0.75 ms a
        login)."""
        try:
            local, dom = split_address(address)
        except AddressError:
            return None
        sql, order = self._mailbox_sql or self._compile_mailbox_sql()
        params: Any = {"dom": dom, "local": local}
        if order is not None:
            params = tuple(params[name] for name in order)
        with self.engine.connect() as conn:
            cursor = conn.connection.cursor()  # the driver's: no result object to set up for one row
            try:
                cursor.execute(sql, params)
                row = cursor.fetchone()
            finally:
                cursor.close()
        if row is None:
            return None
        found = dict(zip(_MAILBOX_COLUMNS, row, strict=True))
        found["enabled"], found["paused"] = bool(found["enabled"]), bool(found["paused"])
        return found

    def _compile_mailbox_sql(self) -> tuple[str, tuple[str, ...] | None]:
        compiled = _MAILBOX_ROW.compile(dialect=self.engine.dialect)
        order = tuple(compiled.positiontup or ()) if compiled.positional else None
        self._mailbox_sql = (str(compiled), order)
        return self._mailbox_sql

    def mailbox_owner(self, address: str) -> MailboxOwner | None:
        """The tenant and domain of the mailbox ``address`` (any case, U- or A-label), or None."""
        row = self.mailbox_get(address)
        if row is None:
            return None
        return MailboxOwner(f"{row['local_part']}@{row['domain']}", row["tenant"], row["domain"], row["local_part"],
                            bool(row["enabled"]))

    def mailbox_set(self, address: str, **values: Any) -> None:
        """Change password_hash / quota_bytes / enabled of a mailbox."""
        local, dom = _checked(split_address, address)
        with self.engine.begin() as conn:
            did = self._domain_id(conn, dom)
            result = conn.execute(mailboxes.update().where(mailboxes.c.domain_id == did,
                                                           mailboxes.c.local_part == local).values(**values))
            if result.rowcount == 0:
                raise DirectoryError(f"no such mailbox {local}@{dom}")
            _bump(conn)

    def mailbox_rm(self, address: str) -> None:
        local, dom = _checked(split_address, address)
        with self.engine.begin() as conn:
            did = self._domain_id(conn, dom)
            result = conn.execute(mailboxes.delete().where(mailboxes.c.domain_id == did,
                                                           mailboxes.c.local_part == local))
            if result.rowcount == 0:
                raise DirectoryError(f"no such mailbox {local}@{dom}")
            _bump(conn)

    # --- aliases -------------------------------------------------------------------------------

    def alias_add(self, source: str, targets: Iterable[str]) -> list[str]:
        """Add targets to an alias (created on first use). Returns the alias's full target list."""
        local, dom = _checked(split_address, source)
        clean = [_checked(normalize_address, t) for t in targets]
        if not clean:
            raise DirectoryError("an alias needs at least one target")
        with self.engine.begin() as conn:
            did = self._domain_id(conn, dom)
            aid = conn.execute(sa.select(aliases.c.id).where(aliases.c.domain_id == did,
                                                             aliases.c.local_part == local)).scalar()
            if aid is None:
                aid = inserted_id(conn.execute(aliases.insert().values(domain_id=did, local_part=local)))
            have = set(conn.execute(sa.select(alias_targets.c.target).where(alias_targets.c.alias_id == aid))
                       .scalars())
            for target in clean:
                if target not in have:
                    conn.execute(alias_targets.insert().values(alias_id=aid, target=target))
                    have.add(target)
            _bump(conn)
            return sorted(have)

    def alias_list(self, domain: str | None = None, tenant: str | None = None) -> list[dict[str, Any]]:
        query = (sa.select((aliases.c.local_part + "@" + domains.c.name).label("source"),
                           tenants.c.name.label("tenant"), alias_targets.c.target)
                 .select_from(aliases.join(domains).join(tenants).join(alias_targets))
                 .order_by(domains.c.name, aliases.c.local_part, alias_targets.c.target))
        if domain:
            query = query.where(domains.c.name == _checked(normalize_domain, domain))
        if tenant:
            query = query.where(tenants.c.name == normalize_tenant(tenant))
        out: dict[str, dict[str, Any]] = {}
        with self.engine.connect() as conn:
            for row in conn.execute(query):
                entry = out.setdefault(row.source, {"source": row.source, "tenant": row.tenant, "targets": []})
                entry["targets"].append(row.target)
        return list(out.values())

    def alias_rm(self, source: str, targets: Iterable[str] = ()) -> None:
        """Remove some targets of an alias, or the whole alias when none are named."""
        local, dom = _checked(split_address, source)
        drop = [_checked(normalize_address, t) for t in targets]
        with self.engine.begin() as conn:
            did = self._domain_id(conn, dom)
            aid = conn.execute(sa.select(aliases.c.id).where(aliases.c.domain_id == did,
                                                             aliases.c.local_part == local)).scalar()
            if aid is None:
                raise DirectoryError(f"no such alias {local}@{dom}")
            if drop:
                result = conn.execute(alias_targets.delete().where(alias_targets.c.alias_id == aid,
                                                                   alias_targets.c.target.in_(drop)))
                if result.rowcount == 0:
                    raise DirectoryError(f"alias {local}@{dom} has none of those targets")
                left = conn.execute(sa.select(sa.func.count()).select_from(alias_targets)
                                    .where(alias_targets.c.alias_id == aid)).scalar_one()
            else:
                left = 0
            if not left:
                conn.execute(alias_targets.delete().where(alias_targets.c.alias_id == aid))
                conn.execute(aliases.delete().where(aliases.c.id == aid))
            _bump(conn)

    # --- lookups for the resolver (uncached; the resolver caches) --------------------------------

    def lookup_domain(self, conn: Connection, dom: str) -> DomainInfo | None:
        row = conn.execute(_domain_select().where(domains.c.name == dom)).first()
        return DomainInfo(**row._mapping) if row else None

    def lookup_alias(self, conn: Connection, domain_id: int, local: str) -> list[str] | None:
        aid = conn.execute(sa.select(aliases.c.id).where(aliases.c.domain_id == domain_id,
                                                         aliases.c.local_part == local)).scalar()
        if aid is None:
            return None
        return list(conn.execute(sa.select(alias_targets.c.target).where(alias_targets.c.alias_id == aid)
                                 .order_by(alias_targets.c.id)).scalars())

    def lookup_mailbox(self, conn: Connection, domain_id: int, local: str) -> dict[str, Any] | None:
        row = conn.execute(sa.select(mailboxes.c.local_part, mailboxes.c.quota_bytes, mailboxes.c.enabled)
                           .where(mailboxes.c.domain_id == domain_id, mailboxes.c.local_part == local)).first()
        return dict(row._mapping) if row else None


def _tenant_select() -> sa.Select:
    ndomains = (sa.select(sa.func.count()).select_from(domains)
                .where(domains.c.tenant_id == tenants.c.id).scalar_subquery())
    return sa.select(tenants.c.name, tenants.c.display_name, tenants.c.enabled, ndomains.label("domains"),
                     tenants.c.suppressed_recipients, tenants.c.home_node, tenants.c.dmarc_enforce,
                     tenants.c.spam_reject, tenants.c.spam_greylist, tenants.c.spam_rewrite_subject,
                     tenants.c.spam_add_header, tenants.c.reply_spam, tenants.c.greylist)


def _domain_select() -> sa.Select:
    return (sa.select(domains.c.id, domains.c.name, tenants.c.name.label("tenant"),
                      (domains.c.enabled & tenants.c.enabled).label("enabled"),
                      domains.c.catchall, domains.c.plus_separator, domains.c.postmaster, domains.c.dmarc_enforce,
                      tenants.c.home_node, tenants.c.paused, tenants.c.moved_from,
                      tenants.c.dmarc_enforce.label("tenant_dmarc_enforce"),
                      domains.c.mta_sts_mode,
                      domains.c.greylist, tenants.c.greylist.label("tenant_greylist"))
            .select_from(domains.join(tenants)))


def _checked(fn, value):  # noqa: ANN001, ANN202
    try:
        return fn(value)
    except AddressError as exc:
        raise DirectoryError(str(exc)) from None
