"""Answering ACME challenges: files the web listener serves, and the DNS-01 hook.

The ACME client may run in the CLI or in the certs service while the web service answers the CA, so
they meet on disk under ``tls/acme/``: HTTP-01 key authorizations in ``http-01/<token>`` (served at
``/.well-known/acme-challenge/<token>``), TLS-ALPN-01 certificates in ``tls-alpn-01/<name>.pem`` (picked
by the web listener's SNI callback). DNS-01 runs ``acme.dns01_hook add|remove DOMAIN VALUE``.

TLS-ALPN-01 (RFC 8737) is built here because the ``acme`` library dropped its helper for it in
release 4: a self-signed certificate for the name with the critical ``id-pe-acmeIdentifier``
extension carrying SHA-256 of the key authorization.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import re
import shlex
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, ObjectIdentifier

from ..privileges import private_dir, write_private_file

ACME_IDENTIFIER = ObjectIdentifier("1.3.6.1.5.5.7.1.31")
TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
HOOK_TIMEOUT = 120.0


class ChallengeError(RuntimeError):
    """A challenge could not be set up (hook failed, no hook configured ...)."""


class ChallengeFiles:
    """The on-disk meeting point of the ACME client and the web listener."""

    def __init__(self, acme_dir: Path, owner: tuple[int, int] | None = None) -> None:
        self.acme_dir = acme_dir
        self.owner = owner

    @property
    def http01_dir(self) -> Path:
        return self.acme_dir / "http-01"

    @property
    def alpn_dir(self) -> Path:
        return self.acme_dir / "tls-alpn-01"

    def http01_put(self, token: str, key_authorization: str) -> Path:
        if not TOKEN.match(token):
            raise ChallengeError(f"bad HTTP-01 token {token!r}")
        private_dir(self.acme_dir, self.owner)
        private_dir(self.http01_dir, self.owner)
        path = self.http01_dir / token
        write_private_file(path, key_authorization.encode(), self.owner)
        return path

    def http01_get(self, token: str) -> str | None:
        """The key authorization for ``token``, or None (what the web route answers)."""
        if not TOKEN.match(token):
            return None
        try:
            return (self.http01_dir / token).read_text()
        except OSError:
            return None

    def alpn_put(self, name: str, key_authorization: str) -> Path:
        private_dir(self.acme_dir, self.owner)
        private_dir(self.alpn_dir, self.owner)
        path = self.alpn_dir / f"{name}.pem"
        write_private_file(path, alpn_certificate(name, key_authorization), self.owner)
        return path

    def remove(self, path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def alpn_certificate(name: str, key_authorization: str) -> bytes:
    """Key and certificate (PEM) answering TLS-ALPN-01 for ``name`` (RFC 8737 §3)."""
    key = ec.generate_private_key(ec.SECP256R1())
    digest = hashlib.sha256(key_authorization.encode()).digest()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=7))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            # the extension's value is the DER OCTET STRING of the digest
            .add_extension(x509.UnrecognizedExtension(ACME_IDENTIFIER, b"\x04\x20" + digest), critical=True)
            .sign(key, hashes.SHA256()))
    return (key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()) + cert.public_bytes(serialization.Encoding.PEM))


def run_dns_hook(hook: str, action: str, domain: str, value: str) -> None:
    """``HOOK add|remove DOMAIN VALUE``: the hook publishes (or withdraws) ``_acme-challenge.DOMAIN TXT VALUE``
    and returns once it is visible to the CA's resolvers; a non-zero exit fails the order."""
    if not hook:
        raise ChallengeError("dns-01 needs acme.dns01_hook (a command run as HOOK add|remove DOMAIN VALUE)")
    argv = [*shlex.split(hook), action, domain, value]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=HOOK_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ChallengeError(f"dns-01 hook {argv[0]} {action} {domain}: {exc}") from None
    if done.returncode != 0:
        why = (done.stderr or done.stdout).strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
        raise ChallengeError(f"dns-01 hook {action} {domain} failed: {why[0]}")
