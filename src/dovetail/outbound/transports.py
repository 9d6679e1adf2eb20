"""Transports: how a tenant's, a domain's or a sender's mail leaves (Postfix's transport_maps and
sender_dependent_relayhost_maps folded into one table).

The most specific entry wins: the sender address, then its domain, then the domain's tenant, then
the ``default`` entry; with no entry at all mail goes straight to the recipient's MX. Relay secrets
must go to the relay as they are (AUTH), so they cannot be hashed: they are sealed with the data
directory's credentials key (:mod:`dovetail.sealing`), and the database alone does not give them away,
unlike Postfix's sasl_passwd.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from dovetail.directory.addresses import (
    AddressError,
    check_tenant_name,
    normalize_address,
    normalize_domain,
    normalize_tenant,
)
from dovetail.directory.store import Directory
from dovetail.log import get_logger
from dovetail.outbound.schema import transports
from dovetail.sealing import Sealer, SealError

log = get_logger("outbound")
SECRET_PURPOSE = "relay secret"

SCOPES = ("sender", "domain", "tenant", "default")
KINDS = ("relay", "mx")
TLS_MODES = ("starttls", "implicit", "none")
_SES_HOST = re.compile(r"email-smtp(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com\.?", re.I)



class TransportError(ValueError):
    """A refused transport definition."""


@dataclass(frozen=True)
class Transport:
    kind: str = "mx"
    host: str | None = None
    port: int | None = None
    tls: str = "starttls"
    username: str | None = None
    secret: str | None = None
    scope: str = "default"
    match: str = "*"

    @property
    def ses_region(self) -> str | None:
        """The AWS region when the relay is the SES SMTP interface, else None."""
        m = _SES_HOST.fullmatch(self.host or "")
        return m.group(1).lower() if m else None

    @property
    def name(self) -> str:
        """``relay:[host]:port`` or ``mx``, as Postfix writes a nexthop."""
        if self.kind == "relay":
            return f"relay:[{self.host}]:{self.port}"
        return "mx"

    def public(self) -> dict[str, object]:
        """The entry without its secret, for listings."""
        return {"scope": self.scope, "match": self.match, "kind": self.kind, "host": self.host, "port": self.port,
                "tls": self.tls, "username": self.username, "secret": "***" if self.secret else None}


DIRECT = Transport()


def _match(scope: str, match: str) -> str:
    try:
        if scope == "sender":
            return normalize_address(match)
        if scope == "domain":
            return normalize_domain(match)
        if scope == "tenant":
            return check_tenant_name(match)
    except AddressError as exc:
        raise TransportError(str(exc)) from None
    if scope == "default":
        return "*"
    raise TransportError(f"scope {scope!r}: must be one of {', '.join(SCOPES)}")


class Transports:
    """The transport table with a short-lived in-process cache for the delivery hot path."""

    def __init__(self, engine: Engine, cache_ttl: float = 10.0, sealer: Sealer | None = None) -> None:
        """With a ``sealer`` (see :mod:`dovetail.sealing`) relay secrets are sealed when set and opened
        when read; without one they are stored as given and a sealed one stays sealed."""
        self.engine = engine
        self.sealer = sealer
        self.cache_ttl = cache_ttl
        self._cache: tuple[float, dict[tuple[str, str], Transport]] | None = None
        self._lock = threading.Lock()

    def set(self, scope: str, match: str, kind: str, host: str | None = None, port: int | None = None,
            tls: str = "starttls", username: str | None = None, secret: str | None = None) -> Transport:
        """Add or replace the entry for (scope, match)."""
        key = _match(scope, match)
        if kind not in KINDS:
            raise TransportError(f"kind {kind!r}: must be relay or mx")
        if tls not in TLS_MODES:
            raise TransportError(f"tls {tls!r}: must be one of {', '.join(TLS_MODES)}")
        if kind == "relay":
            if not host or not re.fullmatch(r"[A-Za-z0-9.-]{1,253}|\[?[0-9a-fA-F:.]+\]?", host):
                raise TransportError(f"relay host {host!r} is not a host name or address")
            host = host.strip("[]")
            port = port or (465 if tls == "implicit" else 587)
            if not 0 < port < 65536:
                raise TransportError("port must be 1-65535")
            if bool(username) != bool(secret):
                raise TransportError("give both a user name and a secret for relay AUTH, or neither")
        else:
            host, port, username, secret = None, None, None, None
        values = dict(kind=kind, host=host, port=port, tls=tls, username=username, secret=secret)
        stored = dict(values)
        if secret and self.sealer is not None:
            stored["secret"] = self.sealer.seal(secret, SECRET_PURPOSE)
        with self.engine.begin() as conn:
            if conn.execute(transports.update().where(transports.c.scope == scope, transports.c.match == key)
                            .values(**stored)).rowcount == 0:
                conn.execute(transports.insert().values(scope=scope, match=key, **stored))
        self.invalidate()
        return Transport(scope=scope, match=key, kind=kind, host=host, port=port, tls=tls, username=username,
                         secret=secret)

    def remove(self, scope: str, match: str) -> None:
        key = _match(scope, match)
        with self.engine.begin() as conn:
            if conn.execute(transports.delete().where(transports.c.scope == scope,
                                                      transports.c.match == key)).rowcount == 0:
                raise TransportError(f"no transport for {scope} {key}")
        self.invalidate()

    def list(self) -> list[Transport]:
        return sorted(self._load().values(), key=lambda t: (SCOPES.index(t.scope), t.match))

    def _open(self, stored: str | None) -> str | None:
        """The secret as the relay wants it; a secret sealed under another key stays sealed (listings
        still work, and the relay agent refuses to send it)."""
        if self.sealer is None:
            return stored
        try:
            return self.sealer.open(stored, SECRET_PURPOSE)
        except SealError as exc:
            log.warning("relay secret not usable", error=str(exc))
            return stored

    def invalidate(self) -> None:
        with self._lock:
            self._cache = None

    def _load(self) -> dict[tuple[str, str], Transport]:
        now = time.monotonic()
        with self._lock:
            if self._cache is not None and now - self._cache[0] < self.cache_ttl:
                return self._cache[1]
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(transports)).all()
        table = {(r.scope, r.match): Transport(kind=r.kind, host=r.host, port=r.port, tls=r.tls, username=r.username,
                                              secret=self._open(r.secret), scope=r.scope, match=r.match)
                 for r in rows}
        with self._lock:
            self._cache = (now, table)
        return table

    def for_sender(self, sender: str, tenant: str | None = None) -> Transport:
        """The transport for mail from ``sender`` (tenant looked up from the domain when not given)."""
        table = self._load()
        if not table:
            return DIRECT
        try:
            address = normalize_address(sender) if sender else ""
        except AddressError:
            address = ""
        domain = address.rpartition("@")[2]
        if address and ("sender", address) in table:
            return table[("sender", address)]
        if domain and ("domain", domain) in table:
            return table[("domain", domain)]
        if tenant is None and domain:
            tenant = self._tenant_of(domain)
        if tenant and ("tenant", normalize_tenant(tenant)) in table:
            return table[("tenant", normalize_tenant(tenant))]
        return table.get(("default", "*"), DIRECT)

    def for_domain(self, domain: str) -> Transport:
        """The transport used for a domain's senders as a whole (what ``dovetail dns`` plans for)."""
        table = self._load()
        try:
            dom = normalize_domain(domain)
        except AddressError:
            return DIRECT
        if ("domain", dom) in table:
            return table[("domain", dom)]
        tenant = self._tenant_of(dom)
        if tenant and ("tenant", tenant) in table:
            return table[("tenant", tenant)]
        return table.get(("default", "*"), DIRECT)

    def _tenant_of(self, domain: str) -> str | None:
        return Directory(self.engine).domain_tenant(domain)
