"""The certificate store: one folder per certificate under ``<data-dir>/tls/certs/``.

Each folder holds ``fullchain.pem`` and ``key.pem`` (0600) and ``meta.json`` (names, issuer, validity,
serial, how it was obtained); a renewal replaces the three in place. Every save rewrites
``tls/certs/generation``: the TLS listeners compare it at most once a second and load the store again
when it moved, so a renewed certificate serves new handshakes without a restart.

As the DKIM keys, the files belong to the service user (``server.user``) whoever writes them: root
running the CLI writes them with that owner, and ``dovetail serve`` repairs older ones.
``tls/acme/state.json`` keeps each certificate's renewal status (failures, next try, last error).
"""

from __future__ import annotations

import builtins
import contextlib
import datetime as dt
import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from ..privileges import make_private, private_dir, service_owner, write_private_file

_NAME = re.compile(r"^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class CertError(ValueError):
    """A refused certificate operation (bad name, unreadable file ...)."""


def normalize_name(name: str) -> str:
    """A DNS name as certificates carry it (lower case, IDNA A-labels, no trailing dot), or CertError."""
    text = name.strip().rstrip(".").lower()
    wildcard = text.startswith("*.")
    body = text[2:] if wildcard else text
    try:
        body = body.encode("idna").decode("ascii")
    except UnicodeError:
        raise CertError(f"{name!r} is not a valid DNS name") from None
    text = ("*." if wildcard else "") + body
    if "." not in body or len(text) > 253 or not _NAME.match(text):
        raise CertError(f"{name!r} is not a valid DNS name (a fully qualified name such as mail.example.com)")
    return text


@dataclass(frozen=True)
class CertInfo:
    """What ``cert list``, the web page and ``/metrics`` show of one stored certificate."""

    id: str
    names: tuple[str, ...]
    issuer: str
    not_before: dt.datetime
    not_after: dt.datetime
    serial: str
    source: str = "acme"  # acme | manual
    challenge: str = ""

    def days_left(self, now: dt.datetime | None = None) -> float:
        now = now or dt.datetime.now(dt.UTC)
        return (self.not_after - now).total_seconds() / 86400

    def renewal_due(self) -> dt.datetime:
        """At two thirds of the lifetime, as Let's Encrypt advises for 90-day certificates."""
        return self.not_before + (self.not_after - self.not_before) * 2 / 3

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["names"] = list(self.names)
        data["not_before"] = self.not_before.isoformat()
        data["not_after"] = self.not_after.isoformat()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CertInfo:
        return cls(id=str(data["id"]), names=tuple(data["names"]), issuer=str(data["issuer"]),
                   not_before=dt.datetime.fromisoformat(data["not_before"]),
                   not_after=dt.datetime.fromisoformat(data["not_after"]), serial=str(data["serial"]),
                   source=str(data.get("source", "acme")), challenge=str(data.get("challenge", "")))


def describe(chain_pem: bytes, cert_id: str, source: str = "acme", challenge: str = "") -> CertInfo:
    """The metadata of a PEM chain's first (leaf) certificate."""
    leaf = x509.load_pem_x509_certificate(chain_pem)
    try:
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple(n.lower() for n in sans.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = tuple(a.value.lower() for a in leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
                      if isinstance(a.value, str))
    issuer_cn = leaf.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    issuer = str(issuer_cn[0].value) if issuer_cn else leaf.issuer.rfc4514_string()
    return CertInfo(id=cert_id, names=names, issuer=issuer, not_before=leaf.not_valid_before_utc,
                    not_after=leaf.not_valid_after_utc, serial=format(leaf.serial_number, "x"), source=source,
                    challenge=challenge)


@dataclass
class RenewalState:
    """How the last attempts at a certificate went (the CA may be down or rate-limiting)."""

    failures: int = 0
    next_try: float = 0.0  # epoch seconds; 0: whenever due
    last_error: str = ""
    last_attempt: float = 0.0
    last_success: float = 0.0

    def status(self, info: CertInfo | None, now: float | None = None) -> str:
        now = now or time.time()
        if info is not None and info.days_left() <= 0:
            base = "expired"
        elif info is not None and dt.datetime.now(dt.UTC) >= info.renewal_due():
            base = "renewal due"
        else:
            base = "valid" if info is not None else "missing"
        if self.failures:
            when = dt.datetime.fromtimestamp(self.next_try, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
            return f"{base}; {self.failures} failed attempt(s), next try {when}: {self.last_error}"
        return base


@dataclass
class CertStore:
    """The store of one data directory; ``owner`` is who the files must belong to (None: whoever runs)."""

    tls_dir: Path
    owner: tuple[int, int] | None = None
    _states: dict[str, RenewalState] = field(default_factory=dict, repr=False)

    @classmethod
    def for_service(cls, tls_dir: Path, user: str) -> CertStore:
        """The store as the operator's tools and the services use it: files given to ``user`` when root."""
        return cls(tls_dir, service_owner(user))

    @property
    def certs_dir(self) -> Path:
        return self.tls_dir / "certs"

    @property
    def acme_dir(self) -> Path:
        return self.tls_dir / "acme"

    @property
    def generation_file(self) -> Path:
        return self.certs_dir / "generation"

    def _folder(self, cert_id: str) -> Path:
        return self.certs_dir / cert_id.replace("*", "_")

    def chain_path(self, cert_id: str) -> Path:
        return self._folder(cert_id) / "fullchain.pem"

    def key_path(self, cert_id: str) -> Path:
        return self._folder(cert_id) / "key.pem"

    # --- reading ---------------------------------------------------------------------------------

    def list(self) -> builtins.list[CertInfo]:
        out: builtins.list[CertInfo] = []
        if not self.certs_dir.is_dir():
            return out
        for folder in sorted(self.certs_dir.iterdir()):
            meta = folder / "meta.json"
            if not folder.is_dir() or not meta.exists():
                continue
            try:
                out.append(CertInfo.from_json(json.loads(meta.read_text())))
            except (OSError, ValueError, KeyError):
                continue
        return out

    def get(self, cert_id: str) -> CertInfo | None:
        return next((c for c in self.list() if c.id == cert_id), None)

    def covering(self, name: str) -> CertInfo | None:
        """The stored certificate whose names include ``name`` (exactly), if any."""
        return next((c for c in self.list() if name in c.names), None)

    def generation(self) -> str:
        try:
            return self.generation_file.read_text().strip()
        except OSError:
            return ""

    # --- writing ---------------------------------------------------------------------------------

    def save(self, cert_id: str, chain_pem: bytes, key_pem: bytes, source: str = "acme",
             challenge: str = "") -> CertInfo:
        """Store (or replace) a certificate; the key is written first, so a reader that sees the new
        chain never pairs it with the old key for long (and a mismatch is caught at load)."""
        info = describe(chain_pem, cert_id, source, challenge)
        self.ensure_dirs()
        folder = self._folder(cert_id)
        private_dir(folder, self.owner)
        write_private_file(self.key_path(cert_id), key_pem, self.owner)
        write_private_file(self.chain_path(cert_id), chain_pem, self.owner)
        write_private_file(folder / "meta.json", json.dumps(info.to_json(), indent=2).encode(), self.owner)
        self.bump()
        return info

    def bump(self) -> None:
        """Tell the listeners to load the store again."""
        self.ensure_dirs()
        stamp = f"{time.time_ns()}.{os.getpid()}\n".encode()
        write_private_file(self.generation_file, stamp, self.owner)

    def ensure_dirs(self) -> None:
        self.tls_dir.mkdir(parents=True, exist_ok=True)
        private_dir(self.certs_dir, self.owner)
        private_dir(self.acme_dir, self.owner)

    # --- renewal state ---------------------------------------------------------------------------

    @property
    def state_file(self) -> Path:
        return self.acme_dir / "state.json"

    def states(self) -> dict[str, RenewalState]:
        try:
            raw = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}
        out = {}
        for key, value in raw.items() if isinstance(raw, dict) else ():
            with contextlib.suppress(TypeError):
                out[key] = RenewalState(**value)
        return out

    def state(self, cert_id: str) -> RenewalState:
        return self.states().get(cert_id, RenewalState())

    def set_state(self, cert_id: str, state: RenewalState) -> None:
        states = self.states()
        states[cert_id] = state
        self.ensure_dirs()
        write_private_file(self.state_file, json.dumps({k: asdict(v) for k, v in states.items()},
                                                       indent=2).encode(), self.owner)


def served_chain(store: CertStore, hostname: str, fallback: Path) -> bytes | None:
    """The certificate chain (PEM) the listeners serve for ``hostname``: the stored one for the name
    (or its wildcard), as SNI picks it, else the ``tls.cert`` fallback; None when none is readable."""
    name = hostname.lower().rstrip(".")
    info = store.covering(name) or ("." in name and store.covering("*." + name.split(".", 1)[1])) or None
    for path in ([store.chain_path(info.id)] if info else []) + [fallback]:
        try:
            return path.read_bytes()
        except OSError:
            continue
    return None


def repair_store(tls_dir: Path, owner: tuple[int, int]) -> list[tuple[Path, list[str]]]:
    """Give the store's folders and files (``tls/certs``, ``tls/acme``) to the service user, 0700/0600;
    returns what changed, per path."""
    changed = []
    for top in (tls_dir / "certs", tls_dir / "acme"):
        if not top.exists():
            continue
        for dirpath, _dirnames, filenames in os.walk(top):
            for path in [Path(dirpath), *(Path(dirpath) / f for f in filenames)]:
                changes = make_private(path, owner)
                if changes:
                    changed.append((path, changes))
    return changed


def load_key_pem(path: Path) -> bytes:
    """A private key file's PEM (checked to parse), or CertError."""
    try:
        data = path.read_bytes()
        serialization.load_pem_private_key(data, password=None)
    except (OSError, ValueError) as exc:
        raise CertError(f"{path}: {exc}") from None
    return data


def certificate_rows(store: CertStore) -> list[dict[str, Any]]:
    """What ``cert list`` and the web page show, one row per certificate."""
    states = store.states()
    now = dt.datetime.now(dt.UTC)
    rows = []
    for info in store.list():
        state = states.get(info.id) or RenewalState()
        rows.append({"id": info.id, "names": list(info.names), "issuer": info.issuer,
                     "not_after": info.not_after, "days_left": int(info.days_left(now) // 1),
                     "source": info.source, "serial": info.serial, "status": state.status(info)})
    return rows
