"""Recipient resolution: the one function SMTP, the CLI and the API use to route an address.

Order, as Postfix applies virtual_alias_maps before virtual_mailbox_maps, but with the catch-all
last so it never shadows a real mailbox (a classic Postfix pitfall):

1. exact alias            ``sales@example.com`` → its targets, expanded recursively
2. mailbox                ``bob@example.com``
3. without the +tag       ``bob+news@`` → alias or mailbox ``bob@`` (tag kept as ``detail``)
4. reply tokens           ``reply+<token>@``, ``unsubscribe+<token>@`` and ``bounce+<token>@`` (what the
                          send API stamps in Reply-To, List-Unsubscribe and the VERP return path)
                          → the replies intake of the tenant owning the domain,
                          ``mail/<tenant>/_replies/``, which the replies engine consumes as a
                          reply inbox. After step 3, so a ``reply@`` made by hand still wins; before
                          the catch-all, so a catch-all never swallows replies. The token is not
                          checked here (the directory holds no secret): the replies engine verifies
                          its MAC against the same tenant, so it never threads into another one.
   SRS addresses          ``SRS0=HHHH=TT=host=user@`` / ``SRS1=...@`` one of our domains (the envelope
                          sender of mail we forwarded, ``srs.py``) come before everything else: a bounce
                          to one goes back to the original sender; a forged or expired one is refused
                          (status ``refused``, 550 5.7.1 at RCPT). Never cached: they expire by date.
   report addresses       ``dmarc-reports@`` and ``tls-reports@`` (the ``rua=`` addresses ``dovetail dns``
                          publishes for DMARC and TLS-RPT) → the report intake of the tenant owning the
                          domain, ``mail/<tenant>/_reports/``, read by :mod:`dovetail.reports`. After
                          aliases and mailboxes (a hand-made one of that name wins), before the catch-all.
5. postmaster@ / abuse@   always resolve (RFC 5321 §4.5.1, RFC 2142): the domain's ``--postmaster``,
                          else its catch-all, else ``directory.default_postmaster``, else the
                          system mailbox ``mail/_system/postmaster/``
6. domain catch-all
7. unknown

Resolutions are cached per address in-process; the cache is dropped when the directory's
generation counter moves, checked at most every ``directory.cache_check_interval`` so the RCPT
hot path does not touch the database.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import Connection

from .addresses import AddressError, normalize_domain, normalize_local
from .srs import Srs, SrsError, is_srs
from .store import Directory, DomainInfo, generation

SYSTEM_TENANT = "_system"
POSTMASTER_LOCALS = ("postmaster", "abuse")
REPLIES_INTAKE = "_replies"  # mail/<tenant>/_replies/: no domain starts with "_", so no mailbox is shadowed
TOKEN_LOCALS = ("reply", "unsubscribe", "bounce")  # <local>+<token>@, as outbound.send stamps them
TOKEN_SEPARATOR = "+"
REPORTS_INTAKE = "_reports"  # mail/<tenant>/_reports/: DMARC aggregate and TLS-RPT reports about its domains
DMARC_REPORTS_LOCAL = "dmarc-reports"  # rua= of the _dmarc record we publish
TLS_REPORTS_LOCAL = "tls-reports"  # rua= of the _smtp._tls record we publish
REPORT_LOCALS = (DMARC_REPORTS_LOCAL, TLS_REPORTS_LOCAL)


def replies_intake_maildir(mail_root: Path, tenant: str) -> Path:
    """The Maildir of a tenant's replies intake: where ``reply+<token>@`` of its domains is delivered."""
    return mail_root / tenant / REPLIES_INTAKE


def reports_intake_maildir(mail_root: Path, tenant: str) -> Path:
    """The Maildir of a tenant's report intake: where the ``rua`` addresses of its domains deliver."""
    return mail_root / tenant / REPORTS_INTAKE


def reply_token_of(local: str) -> str | None:
    """The token of ``reply+<token>``, ``unsubscribe+<token>`` or ``bounce+<token>`` (a local part), else None."""
    prefix, sep, token = local.partition(TOKEN_SEPARATOR)
    return token if sep and token and prefix in TOKEN_LOCALS else None


@dataclass(frozen=True)
class MailboxTarget:
    """A final local destination: a mailbox of ours and its Maildir."""

    address: str
    tenant: str
    domain: str
    local_part: str
    maildir: Path
    quota_bytes: int
    detail: str | None = None
    node: str | None = None  # the tenant's home mailbox node; None on a single installation
    paused: bool = False  # the tenant is being moved (final sync): deliveries wait with a 4xx
    moved_from: str | None = None  # the node the tenant last moved away from (it defers, not refuses)


@dataclass
class Resolution:
    """How an address routes. ``ok`` with mailboxes and/or external targets, or a refusal ``reason``."""

    address: str
    status: str  # ok | unknown | not_local | disabled | loop | invalid | refused
    mailboxes: list[MailboxTarget] = field(default_factory=list)
    external: list[str] = field(default_factory=list)
    reason: str = ""
    steps: list[str] = field(default_factory=list)
    # whether the recipient domain enforces senders' DMARC policies, by its own or its tenant's setting;
    # None: neither says, mx.dmarc_enforce decides. ``dmarc_enforce_by``: domain, tenant or global.
    dmarc_enforce: bool | None = None
    dmarc_enforce_by: str = "global"
    greylist: bool | None = None  # greylisting of the recipient domain (or its tenant); None: the MX default

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _on_node(domain: DomainInfo) -> str:
    paused = " (delivery paused: the tenant is moving)" if domain.paused else ""
    return (f", home node {domain.home_node}" if domain.home_node else "") + paused


class _Loop(Exception):
    pass


class Resolver:
    """Resolves recipient addresses against the directory with a generation-checked cache."""

    def __init__(self, directory: Directory, mail_root: Path, *, depth_limit: int = 20,
                 default_postmaster: str = "", check_interval: float = 1.0, cache_size: int = 100_000,
                 srs: Srs | None = None) -> None:
        self.directory = directory
        self.srs = srs  # reverses the SRS senders of mail we forwarded; None: no SRS address resolves
        self.mail_root = mail_root
        self.depth_limit = depth_limit
        self.default_postmaster = default_postmaster
        self.check_interval = check_interval
        self.cache_size = cache_size
        self._cache: OrderedDict[str, Resolution] = OrderedDict()
        self._generation = -1
        self._checked_at = 0.0
        self._lock = threading.Lock()
        self.db_lookups = 0  # for tests and metrics: how often the database was asked

    def invalidate(self) -> None:
        with self._lock:
            self._cache.clear()
            self._checked_at = 0.0

    def _fresh(self) -> None:
        """Drop the cache when the directory's generation moved; asked at most every ``check_interval``.

        The read is made outside the cache's lock: a slow or locked database then delays only the
        thread that reads, never a lookup answered from the cache (the MX's event loop asks
        ``cached`` under that lock). Meanwhile the others keep answering from the cache, so a change
        is seen within ``check_interval`` plus the time the read takes.
        """
        now = time.monotonic()
        if now - self._checked_at < self.check_interval:
            return
        self._checked_at = now  # this thread reads; the ones that come meanwhile use the cache
        try:
            with self.directory.engine.connect() as c:
                gen = generation(c)
        except BaseException:
            self._checked_at = 0.0  # not known fresh: the next lookup asks again
            raise
        with self._lock:
            if gen != self._generation:
                self._cache.clear()
                self._generation = gen

    def resolve(self, address: str) -> Resolution:
        """Route one address (cached). Never raises for bad input: returns status ``invalid``."""
        key = address.strip().strip("<>").lower()
        if self.srs is not None and is_srs(key):
            return self.resolve_uncached(address)
        self._fresh()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        result = self.resolve_uncached(address)
        with self._lock:
            self._cache[key] = result
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return result

    def cached(self, address: str) -> Resolution | None:
        """A cached resolution that is still known fresh, without touching the database (or None).

        For callers on an event loop: a hit is answered inline, a miss goes to ``resolve`` in a thread.
        """
        if time.monotonic() - self._checked_at >= self.check_interval:
            return None
        key = address.strip().strip("<>").lower()
        with self._lock:
            return self._cache.get(key)

    def is_local_domain(self, domain: str) -> bool:
        """True when ``domain`` is one of ours (used for relay decisions)."""
        res = self.resolve(f"postmaster@{domain}")
        return res.status != "not_local" and res.status != "invalid"

    def resolve_uncached(self, address: str) -> Resolution:
        text = address.strip()
        if text.startswith("<") and text.endswith(">"):
            text = text[1:-1]
        res = Resolution(address=text, status="ok")
        self.db_lookups += 1
        if text.lower() == "postmaster":
            return self._bare_postmaster(res)
        srs_local, at, srs_domain = text.rpartition("@")
        if self.srs is not None and at and is_srs(srs_local):
            return self._srs(res, srs_local, srs_domain)
        with self.directory.engine.connect() as conn:
            try:
                local, dom = _split(text)
            except AddressError as exc:
                res.status, res.reason = "invalid", str(exc)
                return res
            domain = self.directory.lookup_domain(conn, dom)
            if domain is None:
                res.status, res.reason = "not_local", f"{dom} is not a domain of ours"
                res.steps.append(f"{dom}: not one of our domains")
                return res
            res.address = f"{local}@{dom}"
            res.dmarc_enforce, res.dmarc_enforce_by = domain.dmarc_enforce_setting
            res.greylist = domain.greylist_effective
            if not domain.enabled:
                res.status, res.reason = "disabled", f"domain {dom} is disabled"
                return res
            try:
                found = self._route(conn, local, domain, res, depth=0, path=())
            except _Loop as exc:
                res.status, res.reason = "loop", str(exc)
                return res
            if not found and res.status == "ok":
                res.status, res.reason = "unknown", f"no mailbox, alias or catch-all for {local}@{dom}"
            # de-duplicate, keeping order
            seen: set[tuple[str, str | None]] = set()
            uniq = []
            for mb in res.mailboxes:
                if (mb.address, mb.detail) not in seen:
                    seen.add((mb.address, mb.detail))
                    uniq.append(mb)
            res.mailboxes = uniq
            res.external = list(dict.fromkeys(res.external))
            if res.status == "ok" and not res.mailboxes and not res.external:
                res.status, res.reason = "loop", f"alias loop: {res.address} expands to nothing deliverable"
        return res

    def _srs(self, res: Resolution, local: str, dom: str) -> Resolution:
        """A bounce to an SRS address of one of our domains: back to the original sender, or refused."""
        assert self.srs is not None
        try:
            dom = normalize_domain(dom)
        except AddressError as exc:
            res.status, res.reason = "invalid", str(exc)
            return res
        with self.directory.engine.connect() as conn:
            domain = self.directory.lookup_domain(conn, dom)
            if domain is None:
                res.status, res.reason = "not_local", f"{dom} is not a domain of ours"
                res.steps.append(f"{dom}: not one of our domains")
                return res
            res.address = f"{local}@{dom}"
            if not domain.enabled:
                res.status, res.reason = "disabled", f"domain {dom} is disabled"
                return res
            try:
                original = self.srs.reverse(local)
            except SrsError as exc:
                res.status, res.reason = "refused", f"invalid SRS address: {exc}"
                res.steps.append(f"{res.address}: {res.reason}")
                return res
            res.steps.append(f"{res.address}: SRS address of {original}")
            if is_srs(original.rpartition("@")[0]):  # SRS1 unwrapped: the first forwarder's SRS0 address
                res.external.append(original)
            else:
                self._expand(conn, res.address, [original], domain, res, 0, (), None)
        if not res.mailboxes and not res.external:
            res.status, res.reason = "unknown", f"SRS address of {original}, which does not exist"
        return res

    def _bare_postmaster(self, res: Resolution) -> Resolution:
        """``<Postmaster>`` without a domain (RFC 5321 §4.5.1): the configured default, else the system box."""
        res.address = "postmaster"
        if self.default_postmaster:
            try:
                local, dom = _split(self.default_postmaster)
            except AddressError as exc:
                res.status, res.reason = "invalid", f"directory.default_postmaster: {exc}"
                return res
            with self.directory.engine.connect() as conn:
                domain = self.directory.lookup_domain(conn, dom)
                res.steps.append(f"postmaster: -> {local}@{dom}")
                if domain is None:
                    res.external.append(f"{local}@{dom}")
                elif not self._route(conn, local, domain, res, depth=1, path=("postmaster",)):
                    res.status, res.reason = "unknown", f"default postmaster {local}@{dom} does not exist"
            return res
        res.steps.append("postmaster: system postmaster mailbox")
        res.mailboxes.append(MailboxTarget(
            address="postmaster", tenant=SYSTEM_TENANT, domain="", local_part="postmaster",
            maildir=self.mail_root / SYSTEM_TENANT / "postmaster", quota_bytes=0))
        return res

    # --- internals -----------------------------------------------------------------------------

    def _route(self, conn: Connection, local: str, domain: DomainInfo, res: Resolution, *,
               depth: int, path: tuple[str, ...], detail: str | None = None) -> bool:
        """Route ``local@domain`` into ``res``; False when nothing matches (unknown)."""
        address = f"{local}@{domain.name}"
        token = reply_token_of(local)
        if depth > self.depth_limit:
            raise _Loop(f"alias expansion deeper than {self.depth_limit} at {address}")
        indent = "  " * depth
        if not domain.enabled:
            res.steps.append(f"{indent}{address}: domain disabled")
            return False
        targets = self.directory.lookup_alias(conn, domain.id, local)
        if targets is not None:
            res.steps.append(f"{indent}{address}: alias -> {', '.join(targets)}")
            self._expand(conn, address, targets, domain, res, depth, path, detail)
            return True
        if self._mailbox(conn, local, domain, res, indent, detail):
            return True
        sep = domain.plus_separator
        if sep and sep in local and not local.startswith(sep):
            base, tag = local.split(sep, 1)
            res.steps.append(f"{indent}{address}: no exact match, trying {base}@{domain.name} (detail {tag!r})")
            targets = self.directory.lookup_alias(conn, domain.id, base)
            if targets is not None:
                res.steps.append(f"{indent}{base}@{domain.name}: alias -> {', '.join(targets)}")
                self._expand(conn, f"{base}@{domain.name}", targets, domain, res, depth, path, tag)
                return True
            if self._mailbox(conn, base, domain, res, indent, tag):
                return True
            local = base
        if token is not None:
            maildir = replies_intake_maildir(self.mail_root, domain.tenant)
            kind = "bounce (VERP)" if local.startswith("bounce") else "reply"
            res.steps.append(f"{indent}{address}: {kind} token -> replies intake of tenant {domain.tenant} "
                             f"({domain.tenant}/{REPLIES_INTAKE}, token {token!r})" + _on_node(domain))
            res.mailboxes.append(MailboxTarget(
                address=address, tenant=domain.tenant, domain=domain.name, local_part=REPLIES_INTAKE,
                maildir=maildir, quota_bytes=0, detail=token, node=domain.home_node,
                paused=domain.paused, moved_from=domain.moved_from))
            return True
        if local in REPORT_LOCALS:
            res.steps.append(f"{indent}{address}: report address -> report intake of tenant {domain.tenant} "
                             f"({domain.tenant}/{REPORTS_INTAKE})")
            res.mailboxes.append(MailboxTarget(
                address=address, tenant=domain.tenant, domain=domain.name, local_part=REPORTS_INTAKE,
                maildir=reports_intake_maildir(self.mail_root, domain.tenant), quota_bytes=0, detail=detail))
            return True
        if local in POSTMASTER_LOCALS:
            target = domain.postmaster or domain.catchall or self.default_postmaster
            if target:
                res.steps.append(f"{indent}{address}: {local} of the domain -> {target}")
                self._expand(conn, address, [target], domain, res, depth, path, detail)
            else:
                res.steps.append(f"{indent}{address}: {local} of the domain -> system postmaster mailbox")
                res.mailboxes.append(MailboxTarget(
                    address=f"postmaster@{domain.name}", tenant=SYSTEM_TENANT, domain="", local_part="postmaster",
                    maildir=self.mail_root / SYSTEM_TENANT / "postmaster", quota_bytes=0, detail=detail))
            return True
        if domain.catchall:
            res.steps.append(f"{indent}{address}: catch-all -> {domain.catchall}")
            self._expand(conn, address, [domain.catchall], domain, res, depth, path, detail)
            return True
        res.steps.append(f"{indent}{address}: unknown")
        return False

    def _mailbox(self, conn: Connection, local: str, domain: DomainInfo, res: Resolution, indent: str,
                 detail: str | None) -> bool:
        row = self.directory.lookup_mailbox(conn, domain.id, local)
        if row is None:
            return False
        address = f"{local}@{domain.name}"
        if not row["enabled"]:
            res.steps.append(f"{indent}{address}: mailbox disabled")
            if not indent:
                res.status, res.reason = "disabled", f"mailbox {address} is disabled"
            return True
        res.steps.append(f"{indent}{address}: mailbox {domain.tenant}/{domain.name}/{local}"
                         + (f" (detail {detail!r})" if detail else "") + _on_node(domain))
        res.mailboxes.append(MailboxTarget(
            address=address, tenant=domain.tenant, domain=domain.name, local_part=local,
            maildir=self.mail_root / domain.tenant / domain.name / local,
            quota_bytes=int(row["quota_bytes"] or 0), detail=detail, node=domain.home_node,
            paused=domain.paused, moved_from=domain.moved_from))
        return True

    def _expand(self, conn: Connection, source: str, targets: list[str], source_domain: DomainInfo,
                res: Resolution, depth: int, path: tuple[str, ...], detail: str | None) -> None:
        path = path + (source,)
        for target in targets:
            try:
                t_local, t_dom = _split(target)
            except AddressError:
                res.steps.append(f"{'  ' * (depth + 1)}{target}: invalid target, skipped")
                continue
            t_addr = f"{t_local}@{t_dom}"
            domain = source_domain if t_dom == source_domain.name else self.directory.lookup_domain(conn, t_dom)
            if domain is None:
                res.steps.append(f"{'  ' * (depth + 1)}{t_addr}: external")
                res.external.append(t_addr)
                continue
            if t_addr in path:
                # Postfix convention: an alias listing itself means "and deliver to my mailbox".
                if t_addr == source and self._mailbox(conn, t_local, domain, res, "  " * (depth + 1), detail):
                    continue
                res.steps.append(f"{'  ' * (depth + 1)}{t_addr}: loop, dropped")
                continue
            if not self._route(conn, t_local, domain, res, depth=depth + 1, path=path, detail=detail):
                res.steps.append(f"{'  ' * (depth + 1)}{t_addr}: target does not exist, dropped")


def _split(address: str) -> tuple[str, str]:
    local, at, dom = address.rpartition("@")
    if not at:
        raise AddressError(f"{address!r} is not an address (local@domain)")
    return normalize_local(local), normalize_domain(dom)
