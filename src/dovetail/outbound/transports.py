"""Transports: how mail leaves, per recipient domain, sender, sender domain, tenant or by default
(Postfix's transport_maps, sender_dependent_relayhost_maps and relayhost folded into one table).

Which rule applies is :mod:`dovetail.outbound.routing`'s precedence table; this module keeps the
rules, refuses the ones that could never work (a sender domain or tenant that is not ours, a relay
whose name does not resolve, a malformed ``relay:[host]:port``) before anything is saved, and
answers the delivery agent from an in-process copy of the table.

That copy is dropped when the table changes, the way resolver caches follow the directory: every
write bumps ``transport_state.generation`` in its transaction, and readers compare it (and the
directory's own generation, since a domain moving to another tenant moves its tenant rule too) at
most every ``check_interval`` seconds, so the hot path does not query the database per message.

A rule may carry a ``bind_address``: the local address its connections come from (Postfix's
``smtp_bind_address`` on a transport), which makes a tenant rule an IP pool. It must be an address
of this machine, checked by binding to it when the rule is set.

A rule of kind ``lmtp`` (``lmtp:HOST:PORT`` or ``lmtp:unix:/PATH``) hands a recipient domain, its
subdomains, or one recipient address to a mailbox node over LMTP: the queue's LMTP agent delivers
them there (:mod:`dovetail.delivery.lmtp`), whether or not the domain is one of ours; lmtp rules are
for recipients only, and take precedence over local delivery, so an MX node can keep its mailboxes
on another node.

Relay secrets must go to the relay as they are (AUTH), so they cannot be hashed: they are sealed
with the data directory's credentials key (:mod:`dovetail.sealing`), and the database alone does not
give them away, unlike Postfix's sasl_passwd.
"""

from __future__ import annotations

import builtins
import ipaddress
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property

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
from dovetail.directory.store import generation as directory_generation
from dovetail.log import get_logger
from dovetail.outbound.routing import SCOPES, Key, candidates, choose, describe
from dovetail.outbound.schema import bump_generation, generation, transports
from dovetail.sealing import Sealer, SealError

log = get_logger("outbound")
SECRET_PURPOSE = "relay secret"

KINDS = ("relay", "mx", "lmtp")
LMTP_PORT = 24
TLS_MODES = ("starttls", "implicit", "none")
RESOLVE_TIMEOUT = 10.0
_SES_HOST = re.compile(r"email-smtp(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com\.?", re.I)
_HOST_NAME = re.compile(r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                        r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?")

HostCheck = Callable[[str], None]


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
    bind_address: str | None = None

    @property
    def ses_region(self) -> str | None:
        """The AWS region when the relay is the SES SMTP interface, else None."""
        m = _SES_HOST.fullmatch(self.host or "")
        return m.group(1).lower() if m else None

    @property
    def name(self) -> str:
        """``relay:[host]:port``, ``lmtp:host:port``, ``lmtp:unix:/path`` or ``mx``, as Postfix writes a nexthop."""
        if self.kind == "relay":
            return f"relay:[{self.host}]:{self.port}"
        if self.kind == "lmtp":
            if self.port is None:
                return f"lmtp:unix:{self.host}"
            return f"lmtp:[{self.host}]:{self.port}" if ":" in (self.host or "") else f"lmtp:{self.host}:{self.port}"
        return "mx"

    @property
    def session_key(self) -> tuple[object, ...]:
        """What makes two transports the same way out (one SMTP session may carry both)."""
        return (self.kind, self.host, self.port, self.tls, self.username, self.secret, self.bind_address)

    def public(self) -> dict[str, object]:
        """The entry without its secret, for listings."""
        return {"scope": self.scope, "match": self.match, "kind": self.kind, "host": self.host, "port": self.port,
                "tls": self.tls, "username": self.username, "secret": "***" if self.secret else None,
                "bind_address": self.bind_address}


DIRECT = Transport()


@dataclass(frozen=True)
class Route:
    """The transport one recipient of one message takes, and the rule that chose it (None: no rule)."""

    transport: Transport
    rule: Key | None
    sender: str = ""
    recipient: str = ""
    tenant: str | None = None

    @property
    def why(self) -> str:
        """The matching rule in words, as ``dovetail transport resolve`` prints it."""
        if self.rule is None:
            return "no rule: straight to the recipient's MX"
        scope, match = self.rule
        return f"{scope} {match} ({describe(scope, match)})"

    def as_dict(self) -> dict[str, object]:
        rule = None if self.rule is None else {"scope": self.rule[0], "match": self.rule[1],
                                                "kind": describe(*self.rule)}
        return {"sender": self.sender, "recipient": self.recipient, "tenant": self.tenant,
                "transport": self.transport.name, **{k: v for k, v in self.transport.public().items()
                                                      if k not in ("scope", "match")},
                "rule": rule, "why": self.why}


def parse_nexthop(text: str) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[host]:port`` or ``relay:[host]:port`` (as listings print it) →
    (host, port or None). Raises TransportError saying what is wrong."""
    rest = text.strip()
    usage = "expected HOST:PORT, [HOST]:PORT or relay:[HOST]:PORT"
    for prefix in ("relay:", "smtp:"):
        if rest.lower().startswith(prefix) and not rest[len(prefix):].isdigit():
            rest = rest[len(prefix):]
            break
    if rest.startswith("["):
        host, bracket, tail = rest[1:].partition("]")
        if not bracket:
            raise TransportError(f"relay {text!r}: no closing ']' ({usage})")
        if tail and not tail.startswith(":"):
            raise TransportError(f"relay {text!r}: {tail!r} after ']' ({usage})")
        port_text: str | None = tail[1:] if tail else None
    else:
        if "[" in rest or "]" in rest:
            raise TransportError(f"relay {text!r}: a bracket out of place ({usage})")
        if rest.count(":") > 1:
            raise TransportError(f"relay {text!r}: write an IPv6 address in brackets, [ADDRESS]:PORT")
        host, colon, tail = rest.partition(":")
        port_text = tail if colon else None
    if not host.strip():
        raise TransportError(f"relay {text!r}: no host ({usage})")
    if port_text is None:
        return host.strip(), None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise TransportError(f"relay {text!r}: port {port_text!r} must be a number 1-65535")
    return host.strip(), int(port_text)


def parse_lmtp_nexthop(text: str) -> tuple[str, int | None]:
    """``lmtp:HOST:PORT``, ``HOST:PORT``, ``HOST`` (port 24), Postfix's ``lmtp:inet:HOST:PORT``, or a
    unix socket ``lmtp:unix:/PATH`` → (host, port), or (path, None) for a unix socket."""
    rest = text.strip()
    if rest.lower().startswith("lmtp:"):
        rest = rest[5:]
    if rest.lower().startswith("unix:"):
        path = rest[5:]
        if not path.startswith("/") or len(path.encode()) > 100:
            raise TransportError(f"lmtp {text!r}: a unix socket is unix:/absolute/path (at most 100 bytes)")
        return path, None
    if rest.lower().startswith("inet:"):
        rest = rest[5:]
    host, port = parse_nexthop(rest)
    return host, port or LMTP_PORT


def _check_host_syntax(host: str | None) -> str:
    if not host:
        raise TransportError("a relay needs a host name or address")
    bare = host.strip().strip("[]")
    try:
        ipaddress.ip_address(bare)
        return bare
    except ValueError:
        pass
    if not _HOST_NAME.fullmatch(bare):
        raise TransportError(f"relay host {host!r} is not a host name or address")
    return bare.rstrip(".").lower()


def host_resolves(host: str, timeout: float = RESOLVE_TIMEOUT) -> None:
    """Raise TransportError unless ``host`` resolves to an address here, as the relay agent will look
    it up when it connects (getaddrinfo: /etc/hosts, then DNS). Bounded by ``timeout``."""
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    outcome: list[BaseException | None] = []

    def lookup() -> None:
        try:
            socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
            outcome.append(None)
        except (OSError, UnicodeError) as exc:
            outcome.append(exc)

    worker = threading.Thread(target=lookup, name="relay-host-lookup", daemon=True)
    worker.start()
    worker.join(timeout)
    if not outcome:
        raise TransportError(f"relay host {host!r} did not resolve within {timeout:g}s")
    error = outcome[0]
    if error is not None:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise TransportError(f"relay host {host!r} does not resolve: {reason}")


def check_bind_address(address: str) -> str:
    """``address`` normalized when it is an IP address of this machine (one a socket can bind to);
    TransportError otherwise, before anything is saved."""
    text = address.strip().strip("[]")
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise TransportError(f"bind address {address!r} is not an IP address") from None
    if ip.is_unspecified or ip.is_multicast:
        raise TransportError(f"bind address {ip}: must be one address of this machine, not {ip}")
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((str(ip), 0))
    except OSError as exc:
        raise TransportError(f"bind address {ip} is not an address of this machine ({exc.strerror})") from None
    return str(ip)


def rule_key(scope: str, match: str) -> Key:
    """A rule's stored (scope, match), checked for syntax only.

    ``recipient`` takes a domain or ``.domain`` (its subdomains), and ``*`` (the default);
    ``sender`` takes an address, or ``@domain``/``domain`` (the sender domain rule, as Postfix's
    ``@domain`` keys); ``domain`` a sender domain; ``tenant`` a tenant name; ``default`` only ``*``.
    """
    scope = scope.strip().lower()
    text = match.strip()
    if scope not in SCOPES:
        raise TransportError(f"rule kind {scope!r}: must be one of {', '.join(SCOPES)}")
    try:
        if scope == "recipient":
            if text == "*":
                return ("default", "*")
            if "@" in text:  # one recipient (lmtp rules only)
                return ("recipient", normalize_address(text))
            if text.startswith("."):
                return ("recipient", "." + normalize_domain(text[1:]))
            return ("recipient", normalize_domain(text))
        if scope == "sender":
            if "@" in text.lstrip("@"):
                return ("sender", normalize_address(text))
            return ("domain", normalize_domain(text.lstrip("@")))
        if scope == "domain":
            return ("domain", normalize_domain(text.lstrip("@")))
        if scope == "tenant":
            return ("tenant", check_tenant_name(text))
    except AddressError as exc:
        raise TransportError(f"{scope} {match!r}: {exc}") from None
    if text != "*":
        raise TransportError(f"default {match!r}: the default rule matches '*' only")
    return ("default", "*")


@dataclass
class _Snapshot:
    """The table as of one generation pair, with the directory answers asked since."""

    stamp: tuple[int, int]
    table: dict[Key, Transport]
    tenant_of: dict[str, str | None] = field(default_factory=dict)

    @cached_property
    def has_lmtp(self) -> bool:
        return any(t.kind == "lmtp" for t in self.table.values())


_bump = bump_generation
_generation = generation


class Transports:
    """The transport table, with an in-process copy for the delivery hot path that follows changes
    made anywhere within ``check_interval`` seconds (the directory's ``cache_check_interval``)."""

    def __init__(self, engine: Engine, check_interval: float = 1.0, sealer: Sealer | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """With a ``sealer`` (see :mod:`dovetail.sealing`) relay secrets are sealed when set and opened
        when read; without one they are stored as given and a sealed one stays sealed."""
        self.engine = engine
        self.sealer = sealer
        self.check_interval = check_interval
        self.clock = clock
        self._snapshot: _Snapshot | None = None
        self._checked_at = float("-inf")
        self._lock = threading.Lock()
        self._loading = threading.Lock()  # held by the one thread reading the table
        self.db_loads = 0  # for tests: how often the table itself was read

    # --- changes -------------------------------------------------------------------------------

    def set(self, scope: str, match: str, kind: str, host: str | None = None, port: int | None = None,
            tls: str = "starttls", username: str | None = None, secret: str | None = None, *,
            check_host: HostCheck | None = host_resolves, bind_address: str | None = None) -> Transport:
        """Add or replace the rule for (scope, match). Everything is checked before anything is
        written: the rule's syntax, that a sender domain and a tenant are ours, the relay host (by
        ``check_host``; None skips the lookup), port, TLS mode, AUTH pair and that ``bind_address`` is
        an address of this machine."""
        key = rule_key(scope, match)
        if kind not in KINDS:
            raise TransportError(f"transport {kind!r}: must be relay, mx or lmtp")
        if kind == "lmtp" and key[0] != "recipient":
            raise TransportError("an lmtp rule is for recipients: a domain, .domain or an address")
        if kind != "lmtp" and "@" in key[1] and key[0] == "recipient":
            raise TransportError(f"a rule for one recipient address ({key[1]}) can only be an lmtp rule")
        if tls not in TLS_MODES:
            raise TransportError(f"tls {tls!r}: must be one of {', '.join(TLS_MODES)}")
        if kind == "relay":
            host = _check_host_syntax(host)
            port = port or (465 if tls == "implicit" else 587)
            if not 0 < port < 65536:
                raise TransportError(f"port {port}: must be 1-65535")
            if bool(username) != bool(secret):
                raise TransportError("give both a user name and a secret for relay AUTH, or neither")
        elif kind == "lmtp":
            if port is not None:  # a unix socket keeps its path in host, with no port
                host = _check_host_syntax(host)
                if not 0 < port < 65536:
                    raise TransportError(f"port {port}: must be 1-65535")
            elif not (host or "").startswith("/"):
                raise TransportError("an lmtp rule needs HOST:PORT or unix:/PATH")
            tls, username, secret = "none", None, None
            if bind_address is not None and bind_address.strip():
                raise TransportError("an lmtp rule has no bind address")
        else:
            host, port, username, secret = None, None, None, None
        if bind_address is not None and bind_address.strip():
            bind_address = check_bind_address(bind_address)
        else:
            bind_address = None
        self._check_ours(key, kind)
        if kind in ("relay", "lmtp") and port is not None and check_host is not None:
            assert host is not None
            check_host(host)
        stored: dict[str, object] = dict(kind=kind, host=host, port=port, tls=tls, username=username, secret=secret,
                                         bind_address=bind_address)
        if secret and self.sealer is not None:
            stored["secret"] = self.sealer.seal(secret, SECRET_PURPOSE)
        scope_, match_ = key
        with self.engine.begin() as conn:
            if conn.execute(transports.update().where(transports.c.scope == scope_, transports.c.match == match_)
                            .values(**stored)).rowcount == 0:
                conn.execute(transports.insert().values(scope=scope_, match=match_, **stored))
            _bump(conn)
        self.invalidate()
        return Transport(scope=scope_, match=match_, kind=kind, host=host, port=port, tls=tls, username=username,
                         secret=secret, bind_address=bind_address)

    def set_nexthop(self, scope: str, match: str, relay: str | None, *, tls: str = "starttls",
                    username: str | None = None, secret: str | None = None, dns_check: bool = True,
                    bind_address: str | None = None) -> Transport:
        """``transport set`` as operators write it: ``relay`` is ``HOST:PORT``, ``[HOST]:PORT`` or
        ``relay:[HOST]:PORT`` of a smarthost, None for straight to the recipient's MX; ``dns_check=False``
        stores a relay whose name does not resolve from here (yet)."""
        host: str | None = None
        port: int | None = None
        if relay is not None:
            host, port = parse_nexthop(relay)
        return self.set(scope, match, "relay" if relay is not None else "mx", host=host, port=port, tls=tls,
                        username=username, secret=secret, check_host=host_resolves if dns_check else None,
                        bind_address=bind_address)

    def set_lmtp(self, scope: str, match: str, nexthop: str, *, dns_check: bool = True) -> Transport:
        """``transport set --lmtp``: ``nexthop`` is ``lmtp:HOST:PORT``, ``HOST:PORT`` or ``lmtp:unix:/PATH``."""
        host, port = parse_lmtp_nexthop(nexthop)
        return self.set(scope, match, "lmtp", host=host, port=port, tls="none",
                        check_host=host_resolves if dns_check else None)

    def _check_ours(self, key: Key, kind: str = "mx") -> None:
        """Sender rules are for the mail our tenants send (submission and the send API take only their
        domains), so a foreign sender domain is refused, most likely a typo, rather than kept without
        a word; forwarded mail keeps its foreign sender and is routed by recipient or default. A
        recipient rule for one of our domains would never apply, since its mail is delivered here, unless
        it is an lmtp rule: that one sends the domain's mail to the node that keeps its mailboxes."""
        scope, match = key
        directory = Directory(self.engine)
        if scope in ("sender", "domain"):
            domain = match.rpartition("@")[2]
            if directory.domain_tenant(domain) is None:
                raise TransportError(f"sender domain {domain} is not one of ours (add it with `dovetail domain add`)")
        elif scope == "tenant":
            if directory.tenant_ref(match) is None:
                raise TransportError(f"no tenant {match!r}")
        elif scope == "recipient" and not match.startswith(".") and kind != "lmtp":
            if directory.domain_tenant(match) is not None:
                raise TransportError(f"{match} is one of our domains: its mail is delivered here, not through a "
                                     "transport")

    def remove(self, scope: str, match: str) -> None:
        scope_, match_ = rule_key(scope, match)
        with self.engine.begin() as conn:
            if conn.execute(transports.delete().where(transports.c.scope == scope_,
                                                      transports.c.match == match_)).rowcount == 0:
                raise TransportError(f"no transport rule {scope_} {match_}")
            _bump(conn)
        self.invalidate()

    def list(self) -> list[Transport]:
        return sorted(self._fresh().table.values(), key=lambda t: (SCOPES.index(t.scope), t.match))

    def invalidate(self) -> None:
        with self._lock:
            self._snapshot = None
            self._checked_at = float("-inf")

    # --- the cached table ----------------------------------------------------------------------

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

    def _fresh(self) -> _Snapshot:
        """The table, read again only when a generation moved since it was read."""
        now = self.clock()
        with self._lock:
            snap = self._snapshot
            if snap is not None and now - self._checked_at < self.check_interval:
                return snap
        # One thread checks the database at a time; the others go on with the table they have (a
        # delivery burst would otherwise send every worker thread to the database in the same instant).
        if not self._loading.acquire(blocking=snap is None):
            return snap  # type: ignore[return-value]  # not None: a blocking acquire cannot fail
        try:
            with self._lock:
                current = self._snapshot
                if current is not None and self.clock() - self._checked_at < self.check_interval:
                    return current  # read by another thread while this one waited
            return self._load(now, current)
        finally:
            self._loading.release()

    def _load(self, now: float, snap: _Snapshot | None) -> _Snapshot:
        with self.engine.connect() as conn:
            stamp = (_generation(conn), directory_generation(conn))
            if snap is None or snap.stamp != stamp:
                rows = conn.execute(sa.select(transports)).all()
                table = {(r.scope, r.match): Transport(kind=r.kind, host=r.host, port=r.port, tls=r.tls,
                                                       username=r.username, secret=self._open(r.secret),
                                                       scope=r.scope, match=r.match, bind_address=r.bind_address)
                         for r in rows}
                snap = _Snapshot(stamp, table)
                self.db_loads += 1
        with self._lock:
            self._snapshot, self._checked_at = snap, now
        return snap

    def _tenant_of(self, snap: _Snapshot, domain: str) -> str | None:
        if domain not in snap.tenant_of:
            snap.tenant_of[domain] = Directory(self.engine).domain_tenant(domain)
        return snap.tenant_of[domain]

    # --- lookups -------------------------------------------------------------------------------

    def resolve(self, sender: str, recipient: str = "", tenant: str | None = None) -> Route:
        """The transport for mail from ``sender`` to ``recipient`` (an address or a bare domain; empty
        for the sender side alone), and the rule that chose it. ``tenant`` is the message's tenant
        when known; otherwise the sender domain's. Unparsable names match no rule of their kind."""
        return self._route(self._fresh(), sender, recipient, tenant)

    def lmtp_for(self, recipient: str) -> Transport | None:
        """The lmtp rule for ``recipient`` (its address, then its domain, then its nearest parent domain),
        or None: the question the queue manager asks before local delivery."""
        snap = self._fresh()
        if not snap.has_lmtp:
            return None
        try:
            address = normalize_address(recipient.strip().strip("<>"))
        except AddressError:
            return None
        domain = address.rpartition("@")[2]
        for key in (("recipient", address), *candidates("", domain, None)):
            found = snap.table.get(key)
            if found is not None:  # the most specific rule decides
                return found if found.kind == "lmtp" else None
        return None

    def for_recipients(self, sender: str, recipients: Iterable[str],
                       tenant: str | None = None) -> builtins.list[Route]:
        """One route per recipient, all from the same copy of the table (the delivery agent's question)."""
        snap = self._fresh()
        return [self._route(snap, sender, rcpt, tenant) for rcpt in recipients]

    def _route(self, snap: _Snapshot, sender: str, recipient: str, tenant: str | None) -> Route:
        text = sender.strip().strip("<>")
        try:
            address = normalize_address(text) if text else ""
        except AddressError:
            address = ""
        try:
            rcpt_domain = normalize_domain(recipient.rpartition("@")[2]) if recipient.strip() else ""
        except AddressError:
            rcpt_domain = ""
        if tenant:
            tenant = normalize_tenant(tenant)
        elif address and snap.table:
            tenant = self._tenant_of(snap, address.rpartition("@")[2])
        key = choose(snap.table, address, rcpt_domain, tenant or None)
        transport = DIRECT if key is None else snap.table[key]
        return Route(transport, key, address, recipient.strip(), tenant or None)

    def explain(self, sender: str, recipient: str, tenant: str | None = None) -> dict[str, object]:
        """``transport resolve``: which transport mail from ``sender`` (``<>`` or empty for the null
        sender) to ``recipient`` takes and which rule chose it, as a mapping (``Route.as_dict``); a
        recipient in one of our domains is delivered here (``transport: virtual``). TransportError for
        an address that does not parse or a tenant that does not exist."""
        bare_sender = sender.strip().strip("<>")
        try:
            rcpt = normalize_address(recipient.strip().strip("<>"))
            if bare_sender:
                normalize_address(bare_sender)
        except AddressError as exc:
            raise TransportError(str(exc)) from None
        directory = Directory(self.engine)
        if tenant is not None:
            found = directory.tenant_ref(tenant)
            if found is None:
                raise TransportError(f"no tenant {tenant!r}")
            tenant = found.name
        domain = rcpt.rpartition("@")[2]
        lmtp = self.lmtp_for(rcpt)
        if lmtp is not None:
            return Route(lmtp, (lmtp.scope, lmtp.match), bare_sender, rcpt, tenant).as_dict()
        if directory.is_local_domain(domain):
            return {"sender": sender, "recipient": rcpt, "tenant": tenant, "transport": "virtual", "rule": None,
                    "why": f"{domain} is one of our domains: delivered here, no transport"}
        return self.resolve(sender, rcpt, tenant).as_dict()

    def for_sender(self, sender: str, tenant: str | None = None) -> Transport:
        """The transport for mail from ``sender`` when no recipient rule applies."""
        return self.resolve(sender, "", tenant).transport

    def for_domain(self, domain: str) -> Transport:
        """The transport used for a domain's senders as a whole (what ``dovetail dns`` plans for)."""
        try:
            dom = normalize_domain(domain)
        except AddressError:
            return DIRECT
        snap = self._fresh()
        if ("domain", dom) in snap.table:
            return snap.table[("domain", dom)]
        key = choose(snap.table, "", "", self._tenant_of(snap, dom) if snap.table else None)
        return DIRECT if key is None else snap.table[key]
