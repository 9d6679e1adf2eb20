"""The data directory: its layout (DESIGN.md) and ``dovetail init``.

Everything Dovetail keeps lives under one directory so a deployment is one path to back up:
config, SQLite database, queue, Maildirs, DKIM keys and TLS material.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from . import config as config_mod

QUEUE_STATES = ("incoming", "active", "deferred", "hold", "corrupt")


@dataclass(frozen=True)
class Layout:
    """Paths of one data directory."""

    root: Path

    @property
    def config_file(self) -> Path:
        return self.root / config_mod.CONFIG_NAME

    @property
    def queue(self) -> Path:
        return self.root / "queue"

    @property
    def mail(self) -> Path:
        return self.root / "mail"

    @property
    def dkim(self) -> Path:
        return self.root / "dkim"

    @property
    def tls(self) -> Path:
        return self.root / "tls"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def reply_token_key(self) -> Path:
        """The installation's key for reply tokens (``replies/tokens.py``)."""
        return self.root / "secrets" / "reply_token.key"

    @property
    def srs_key(self) -> Path:
        """The installation's key for SRS addresses of forwarded mail (``directory/srs.py``)."""
        return self.root / "secrets" / "srs.key"

    def maildir(self, tenant: str, domain: str, local_part: str) -> Path:
        """Where a mailbox lives: ``mail/<tenant>/<domain>/<local-part>/``."""
        return self.mail / tenant / domain / local_part


def default_data_dir() -> Path:
    return Path(os.environ.get("DOVETAIL_DATA_DIR", "./dovetail-data"))


def make_self_signed(cert_path: Path, key_path: Path, hostname: str) -> None:
    """A self-signed ECDSA certificate so STARTTLS works out of the box (replace it in production)."""
    # Here, not at the top: every CLI start imports this module, few make a certificate.
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = dt.datetime.now(dt.UTC)
    sans: list[x509.GeneralName] = [x509.DNSName(hostname), x509.DNSName("localhost"),
                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def init(root: Path) -> list[str]:
    """Create the data directory; keeps whatever already exists. Returns what was created."""
    layout = Layout(root)
    created: list[str] = []
    for folder in [root, layout.mail, layout.dkim, layout.tls, layout.run, layout.queue,
                   *(layout.queue / s for s in QUEUE_STATES)]:
        if not folder.exists():
            # the DKIM key store is the service user's alone (0700, as the key store repairs it to)
            folder.mkdir(parents=True, mode=0o700 if folder == layout.dkim else 0o750)
            created.append(str(folder))
    if not layout.config_file.exists():
        layout.config_file.write_text(config_mod.default_file_text())
        created.append(str(layout.config_file))
    cfg = config_mod.load(root)
    cert, key = cfg.path("tls.cert"), cfg.path("tls.key")
    if not cert.exists() or not key.exists():
        make_self_signed(cert, key, cfg.values["server.hostname"] or socket.getfqdn())
        created.append(str(cert))
    from .db import connect_and_migrate

    connect_and_migrate(cfg).dispose()
    from .sealing import KEY_RELPATH, load_key

    load_key(layout.reply_token_key)  # created now so the service user owns it after the chown below
    load_key(root / KEY_RELPATH)  # seals relay secrets and IMAP-source passwords
    load_key(layout.srs_key)  # signs the SRS senders of forwarded mail
    if os.geteuid() == 0:
        from .privileges import chown_tree, ensure_system_user

        uid, gid = ensure_system_user(cfg["server.user"])
        chown_tree(root, uid, gid, skip=("tls",))
    return created
