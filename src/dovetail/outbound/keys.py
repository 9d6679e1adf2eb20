"""DKIM keys per domain: generation, rotation and the signing keys in use.

Each generation is a pair of selectors, RSA-2048 and Ed25519 (RFC 8463), published side by side:
receivers that do not know Ed25519 ignore its signature and check the RSA one.

Rotation follows the published-before-used rule:

``rotate``   new pair in state ``published``: printed by ``dovetail dns``, not used for signing yet;
``activate`` the published pair starts signing; the previous pair becomes ``retiring`` (still
             published, so messages signed with it in transit keep verifying);
``retire``   retiring pairs are withdrawn: rows and private key files deleted.

A new domain has nothing to roll over: ``ensure`` creates an ``active`` pair at once.

The services sign as the service user (``server.user``), so a key file is that user's whoever makes it:
root running the CLI writes it with that owner, and ``dovetail serve`` repairs older ones
(``repair_key_files``).
A domain whose active key cannot be loaded is never signed with what is left: ``signing_keys`` raises
``DkimKeyUnavailable`` and the delivery agent defers the mail until the key is readable again.

On a PostgreSQL cluster the private keys are not files: each is sealed under the cluster master key in its
row (``dkim_keys.private_key``, see ``dovetail.vault``), so every node signs with the keys any node made
or rotated. A row without one (a key made before the installation moved to PostgreSQL) is read from its
file until ``dovetail serve`` seals it into the row (``import_files``).
"""

from __future__ import annotations

import builtins
import datetime as dt
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from sqlalchemy.engine import Connection, Engine

from dovetail.directory import lookups
from dovetail.directory.addresses import AddressError, normalize_domain
from dovetail.outbound.dkim import SigningKey, dns_txt_value
from dovetail.outbound.schema import bump_generation, dkim_keys
from dovetail.outbound.schema import generation as outbound_generation
from dovetail.privileges import make_private, private_dir, service_owner, unreadable_by, write_private_file
from dovetail.vault import Vault, VaultError, shares_keys

STATES = ("published", "active", "retiring")
ALGORITHMS = ("rsa-sha256", "ed25519-sha256")


class DkimKeyError(ValueError):
    """A refused key operation (unknown domain, nothing to activate...)."""


class DkimKeyUnavailable(DkimKeyError):
    """A domain signs with a key that cannot be loaded (unreadable, missing, damaged): its mail waits."""

    def __init__(self, domain: str, reason: str) -> None:
        super().__init__(f"DKIM key for {domain} unreadable: {reason}")
        self.domain = domain
        self.reason = reason


@dataclass(frozen=True)
class KeyInfo:
    domain: str
    selector: str
    algorithm: str
    state: str
    txt: str
    created_at: dt.datetime | None = None
    problem: str | None = None  # why the private key cannot be loaded, when it cannot

    @property
    def status(self) -> str:
        """The state as ``dkim list`` shows it: ``active``, or ``active (unreadable: <reason>)``."""
        return f"{self.state} (unreadable: {self.problem})" if self.problem else self.state

    @property
    def record_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class DkimKeys:
    """The key store of one data directory: rows in ``dkim_keys``, private keys in ``dkim/``.

    ``owner`` is the service user's ``(uid, gid)`` when root uses the store (``privileges.service_owner``):
    the key files it writes are given to that user, and readability is judged as that user would see it.
    Its method ``list`` shadows the builtin inside the class body, hence ``builtins.list`` in annotations.
    With a cluster's PostgreSQL ``engine`` the private keys are sealed in the rows by ``vault`` (by default
    the vault of the data directory that holds ``dkim_dir``).
    """

    def __init__(self, engine: Engine, dkim_dir: Path, *, owner: tuple[int, int] | None = None,
                 cache_ttl: float = 30.0, rsa_bits: int = 2048, check_interval: float = 1.0,
                 clock: Callable[[], float] = time.monotonic, vault: Vault | None = None) -> None:
        self.engine = engine
        self.dkim_dir = Path(dkim_dir)
        self.owner = owner
        if vault is None and shares_keys(engine):
            vault = Vault(engine, self.dkim_dir.parent)
        self.vault = vault
        self.cache_ttl = cache_ttl
        self.rsa_bits = rsa_bits
        # A key state change anywhere (CLI, web admin) bumps the outbound generation; the signing cache is
        # dropped at the first look after it, at most ``check_interval`` seconds later.
        self.check_interval = check_interval
        self.clock = clock
        self._generation: int | None = None
        self._generation_checked = 0.0
        self._cache: dict[str, tuple[float, list[SigningKey]]] = {}
        self._parsed: dict[Path, tuple[object, SigningKey]] = {}
        self._lock = threading.Lock()

    @classmethod
    def for_service(cls, engine: Engine, dkim_dir: Path, service_user: str) -> DkimKeys:
        """The store as an operator's tools use it (the CLI, the web admin): run as root, the key files it
        writes go to ``service_user`` (the services sign as that user) and readability is judged as that
        user sees it; run as that user, the files are simply its own."""
        return cls(engine, dkim_dir, owner=service_owner(service_user))

    # --- paths and lookups ---------------------------------------------------------------------

    def key_path(self, domain: str, selector: str) -> Path:
        return self.dkim_dir / domain / f"{selector}.key"

    def _domain_id(self, conn: Connection, domain: str) -> int:
        did = lookups.domain_id(conn, domain)
        if did is None:
            raise DkimKeyError(f"{domain!r} is not one of our domains (add it with `dovetail domain add`)")
        return int(did)

    @staticmethod
    def _domain(name: str) -> str:
        try:
            return normalize_domain(name)
        except AddressError as exc:
            raise DkimKeyError(str(exc)) from None

    def list(self, domain: str | None = None, *, check: bool = False) -> builtins.list[KeyInfo]:
        """The keys (of ``domain``); with ``check``, each one that signs or will (active, published)
        carries the reason its private key cannot be loaded, if it cannot."""
        domain_name = lookups.domain_name_of(dkim_keys.c.domain_id)
        query = (sa.select(domain_name.label("name"), dkim_keys.c.selector, dkim_keys.c.algorithm, dkim_keys.c.state,
                           dkim_keys.c.public_key, dkim_keys.c.created_at)
                 .order_by(domain_name, dkim_keys.c.created_at, dkim_keys.c.id))
        if domain:
            query = query.where(lookups.domain_named(dkim_keys.c.domain_id, self._domain(domain)))
        with self.engine.connect() as conn:
            keys = [KeyInfo(r.name, r.selector, r.algorithm, r.state, _txt(r.algorithm, r.public_key), r.created_at)
                    for r in conn.execute(query)]
        if not check:
            return keys
        return [replace(k, problem=self.problem(k.domain, k.selector)) if k.state != "retiring" else k
                for k in keys]

    def _sealed(self, domain: str, selector: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(dkim_keys.c.private_key).where(
                lookups.domain_named(dkim_keys.c.domain_id, domain), dkim_keys.c.selector == selector)).scalar()

    def problem(self, domain: str, selector: str) -> str | None:
        """Why the private key of ``selector`` cannot be loaded by the services, or None when it can."""
        sealed = self._sealed(domain, selector)
        path = self.key_path(domain, selector)
        if self.owner is not None and sealed is None:
            reason = unreadable_by(path, *self.owner)
            if reason:
                return reason
        try:
            self._load(domain, selector, sealed)
        except DkimKeyUnavailable as exc:
            return exc.reason
        return None

    def _purpose(self, domain: str, selector: str) -> str:
        return f"dkim:{domain}:{selector}"

    def _load(self, domain: str, selector: str, sealed: str | None = None) -> SigningKey:
        if sealed is not None:
            assert self.vault is not None or not sealed
            try:
                pem = self.vault.open(sealed, self._purpose(domain, selector)) if self.vault else b""
                return SigningKey.from_pem(domain, selector, pem)
            except VaultError as exc:
                raise DkimKeyUnavailable(domain, str(exc)) from None
            except ValueError as exc:
                raise DkimKeyUnavailable(domain, f"sealed key {selector}: not a usable private key ({exc})") from None
        path = self.key_path(domain, selector)
        try:
            return SigningKey.from_pem(domain, selector, path.read_bytes())
        except OSError as exc:
            raise DkimKeyUnavailable(domain, f"{path}: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise DkimKeyUnavailable(domain, f"{path}: not a usable private key ({exc})") from None

    # --- lifecycle -----------------------------------------------------------------------------

    def ensure(self, domain: str) -> builtins.list[KeyInfo]:
        """Active keys for a domain that has none (``domain add``); a no-op otherwise."""
        dom = self._domain(domain)
        if any(k.state == "active" for k in self.list(dom)):
            return []
        return self._generate(dom, "active")

    def rotate(self, domain: str) -> builtins.list[KeyInfo]:
        """Step 1: a new pair, published but not signing yet."""
        dom = self._domain(domain)
        if any(k.state == "published" for k in self.list(dom)):
            raise DkimKeyError(f"{dom} already has published keys waiting; publish them in DNS, then run "
                            f"`dovetail dkim activate {dom}`")
        return self._generate(dom, "published")

    def activate(self, domain: str) -> builtins.list[KeyInfo]:
        """Step 2: published keys sign from now on; the active ones move to ``retiring``."""
        dom = self._domain(domain)
        with self.engine.begin() as conn:
            did = self._domain_id(conn, dom)
            waiting = conn.execute(sa.select(sa.func.count()).select_from(dkim_keys).where(
                dkim_keys.c.domain_id == did, dkim_keys.c.state == "published")).scalar_one()
            if not waiting:
                raise DkimKeyError(f"{dom} has no published keys to activate (run `dovetail dkim rotate {dom}`)")
            now = _utcnow()
            conn.execute(dkim_keys.update().where(dkim_keys.c.domain_id == did, dkim_keys.c.state == "active")
                         .values(state="retiring", retired_at=now))
            conn.execute(dkim_keys.update().where(dkim_keys.c.domain_id == did, dkim_keys.c.state == "published")
                         .values(state="active", activated_at=now))
            bump_generation(conn)
        self.invalidate(dom)
        return [k for k in self.list(dom) if k.state == "active"]

    def retire(self, domain: str) -> builtins.list[KeyInfo]:
        """Step 3: withdraw retiring keys: rows gone, key files deleted."""
        dom = self._domain(domain)
        gone = [k for k in self.list(dom) if k.state == "retiring"]
        with self.engine.begin() as conn:
            did = self._domain_id(conn, dom)
            conn.execute(dkim_keys.delete().where(dkim_keys.c.domain_id == did, dkim_keys.c.state == "retiring"))
            bump_generation(conn)
        for key in gone:  # files of a single node (or of keys made before the cluster)
            self.key_path(dom, key.selector).unlink(missing_ok=True)
        self.invalidate(dom)
        return gone

    def _selectors(self, conn: Connection, did: int) -> tuple[str, str]:
        taken = set(conn.execute(sa.select(dkim_keys.c.selector).where(dkim_keys.c.domain_id == did)).scalars())
        stamp = time.strftime("%Y%m%d", time.gmtime())
        for suffix in ["", *"bcdefghijklmnopqrstuvwxyz"]:
            base = f"d{stamp}{suffix}"
            if f"{base}-rsa" not in taken and f"{base}-ed" not in taken:
                return f"{base}-rsa", f"{base}-ed"
        raise DkimKeyError("too many key generations today")

    def _generate(self, dom: str, state: str) -> builtins.list[KeyInfo]:
        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=self.rsa_bits)
        ed_key = ed25519.Ed25519PrivateKey.generate()
        with self.engine.begin() as conn:
            did = self._domain_id(conn, dom)
            sel_rsa, sel_ed = self._selectors(conn, did)
            if self.vault is None:
                private_dir(self.dkim_dir, self.owner)
                private_dir(self.dkim_dir / dom, self.owner)
            made = []
            for selector, algorithm, key in ((sel_rsa, "rsa-sha256", rsa_key), (sel_ed, "ed25519-sha256", ed_key)):
                pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
                sealed = None
                if self.vault is not None:
                    try:
                        sealed = self.vault.seal(pem, self._purpose(dom, selector))
                    except VaultError as exc:
                        raise DkimKeyError(str(exc)) from None
                else:
                    write_private_file(self.key_path(dom, selector), pem, self.owner)
                txt = dns_txt_value(key)
                conn.execute(dkim_keys.insert().values(
                    domain_id=did, selector=selector, algorithm=algorithm, public_key=txt.split("p=", 1)[1],
                    state=state, activated_at=_utcnow() if state == "active" else None, private_key=sealed))
                made.append(KeyInfo(dom, selector, algorithm, state, txt))
            bump_generation(conn)
        self.invalidate(dom)
        return made

    # --- signing -------------------------------------------------------------------------------

    def _follow_changes(self, now: float) -> None:
        """Drop the signing cache when the outbound generation moved (checked once per interval)."""
        if now - self._generation_checked < self.check_interval:
            return
        self._generation_checked = now
        with self.engine.connect() as conn:
            current = outbound_generation(conn)
        if self._generation is not None and current != self._generation:
            self.invalidate()
        self._generation = current

    def invalidate(self, domain: str | None = None) -> None:
        with self._lock:
            if domain is None:
                self._cache.clear()
            else:
                self._cache.pop(domain, None)

    def signing_keys(self, domain: str) -> builtins.list[SigningKey]:
        """The active keys of ``domain`` (cached for ``cache_ttl`` seconds); empty when it has none.

        ``DkimKeyUnavailable`` when one of them cannot be loaded: signing with the others, or not at all,
        would send the mail unlike the operator set it up. That failure is not cached, so the next try
        signs once the file is readable again."""
        try:
            dom = normalize_domain(domain)
        except AddressError:
            return []
        now = self.clock()
        self._follow_changes(now)
        with self._lock:
            hit = self._cache.get(dom)
            if hit is not None and now - hit[0] < self.cache_ttl:
                return hit[1]
        query = (sa.select(dkim_keys.c.selector, dkim_keys.c.private_key)
                 .where(lookups.domain_named(dkim_keys.c.domain_id, dom), dkim_keys.c.state == "active")
                 .order_by(dkim_keys.c.id))
        with self.engine.connect() as conn:
            rows = list(conn.execute(query))
        keys = [self._load_unchanged(dom, r.selector, r.private_key) for r in rows]
        with self._lock:
            self._cache[dom] = (now, keys)
        return keys

    def _load_unchanged(self, domain: str, selector: str, sealed: str | None = None) -> SigningKey:
        """``_load``, skipping the parse (milliseconds for RSA, which checks the key) while the file's
        inode, size, mtime and ctime (or the sealed value) are those of the last load: a rewrite, chmod or
        chown loads it again, so a key made unreadable is found out as before. Each cache expiry makes
        every message in flight ask at once; without this each of them parsed the keys again."""
        path = self.key_path(domain, selector)
        if sealed is not None:
            with self._lock:
                hit = self._parsed.get(path)
            if hit is not None and hit[0] == sealed:
                return hit[1]
            key = self._load(domain, selector, sealed)
            with self._lock:
                self._parsed[path] = (sealed, key)
            return key
        try:
            st = os.stat(path)
        except OSError:
            return self._load(domain, selector)  # raises DkimKeyUnavailable with the reason
        stamp = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        with self._lock:
            hit = self._parsed.get(path)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        key = self._load(domain, selector)
        with self._lock:
            self._parsed[path] = (stamp, key)
        return key


    def import_files(self) -> int:
        """Seal into their rows the private keys that are still files (made before the installation
        moved to PostgreSQL), so every node of the cluster signs with them; returns how many. The files
        stay, as a backup, until the keys are retired. A no-op without a vault (single node)."""
        if self.vault is None:
            return 0
        domain_name = lookups.domain_name_of(dkim_keys.c.domain_id)
        with self.engine.connect() as conn:
            rows = list(conn.execute(sa.select(dkim_keys.c.id, domain_name.label("name"), dkim_keys.c.selector)
                                     .where(dkim_keys.c.private_key.is_(None))))
        done = 0
        for row in rows:
            path = self.key_path(row.name, row.selector)
            try:
                pem = path.read_bytes()
                SigningKey.from_pem(row.name, row.selector, pem)
            except (OSError, ValueError):
                continue  # nothing usable to import: ``dkim list`` names the problem
            sealed = self.vault.seal(pem, self._purpose(row.name, row.selector))
            with self.engine.begin() as conn:
                done += conn.execute(dkim_keys.update().where(dkim_keys.c.id == row.id,
                                                              dkim_keys.c.private_key.is_(None))
                                     .values(private_key=sealed)).rowcount
        if done:
            with self.engine.begin() as conn:
                bump_generation(conn)
            self.invalidate()
        return done


def repair_key_files(dkim_dir: Path, owner: tuple[int, int]) -> list[tuple[Path, list[str]]]:
    """Give every folder and key file under ``dkim_dir`` to the service user (``owner``), 0700 / 0600, as
    ``dovetail serve`` does before the services start; returns what changed, path by path."""
    changed: list[tuple[Path, list[str]]] = []
    if not dkim_dir.is_dir():
        return changed
    for dirpath, _dirnames, filenames in os.walk(dkim_dir):
        for path in [Path(dirpath), *(Path(dirpath) / f for f in filenames)]:
            if path.is_symlink():
                continue
            changes = make_private(path, owner)
            if changes:
                changed.append((path, changes))
    return changed


def _txt(algorithm: str, public_key: str) -> str:
    k = "rsa" if algorithm.startswith("rsa") else "ed25519"
    return f"v=DKIM1; k={k}; p={public_key}"
