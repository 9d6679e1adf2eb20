"""The cluster's sealed keys: DKIM private keys and the installation secrets, in PostgreSQL.

Several nodes on one PostgreSQL directory must sign with the same DKIM keys and open the same sealed
credentials, without files copied between them. So, with PostgreSQL, those keys live in the database,
each sealed with AES-256-GCM (``cryptography``) under one **cluster master key** and bound to what it
is (the GCM associated data: a sealed DKIM key of one selector cannot be passed off as another's, nor
as the credentials key). A database dump alone opens nothing; the operator distributes one secret to
every node instead of a folder of key files:

- the environment variable ``DOVETAIL_MASTER_KEY`` (64 hex digits), or else
- the file ``<data>/secrets/master.key`` (hex, mode 0600, as ``secrets/credentials.key``).

The first node that needs a sealed key and finds none in the database makes the master key (in its
``secrets/master.key``) and records a check value sealed under it; every other node must be given that
key. A node without it, or with another one, is told so when it first needs a key (a clear error naming
the file and the variable; ``dovetail serve`` logs it at start), and mail that needs the key waits
(DKIM signing defers) rather than leaving unsigned.

An installation that moves from SQLite to PostgreSQL keeps its keys: a DKIM key found only as a file is
sealed into its row by ``dovetail serve`` (and read from the file until then), and an installation
secret (``secrets/credentials.key``...) that the database does not hold yet is taken from this node's
file when it has one, so what it already sealed stays readable. Single-node SQLite keeps its key files
exactly as before; nothing here is used then.
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
from pathlib import Path

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from .sealing import KEY_RELPATH, Sealer, load_key

ENV = "DOVETAIL_MASTER_KEY"
MASTER_RELPATH = Path("secrets") / "master.key"
PREFIX = "vault:v1:"
NONCE_BYTES = 12
CHECK_NAME = "master-key-check"
CHECK_PLAIN = b"dovetail cluster master key"

metadata = sa.MetaData()

# name: "master-key-check", or "secret:<file name>" for an installation secret (credentials.key...)
sealed_secrets = sa.Table(
    "sealed_secrets", metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False, server_default=sa.func.current_timestamp()),
)


class VaultError(RuntimeError):
    """The cluster's sealed keys cannot be opened on this node (no master key, or not the cluster's)."""


def shares_keys(engine: Engine | None) -> bool:
    """Whether keys live in the database (a cluster's PostgreSQL) rather than in the data directory."""
    return engine is not None and engine.dialect.name == "postgresql"


def fingerprint(key: bytes) -> str:
    """A short name of a master key for messages (not the key: a hash of it)."""
    return hashlib.sha256(b"dovetail-master-key\0" + key).hexdigest()[:16]


def _parse_hex(text: str, where: str) -> bytes:
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        raise VaultError(f"{where} is not a master key (64 hex digits)") from None
    if len(key) != 32:
        raise VaultError(f"{where} is not a master key (64 hex digits)")
    return key


class Vault:
    """Seals and opens the cluster's keys with the master key; holds the installation secrets.

    The master key is looked for at first use (not at construction), so a service that never needs a
    sealed key starts on a node that was not given one."""

    def __init__(self, engine: Engine, data_dir: Path) -> None:
        self.engine = engine
        self.data_dir = Path(data_dir)
        self._aead: AESGCM | None = None
        self._secrets: dict[str, bytes] = {}
        self._lock = threading.Lock()

    @property
    def master_path(self) -> Path:
        return self.data_dir / MASTER_RELPATH

    def _given_key(self) -> bytes | None:
        env = os.environ.get(ENV, "")
        if env:
            return _parse_hex(env, f"${ENV}")
        try:
            return _parse_hex(self.master_path.read_text(), str(self.master_path))
        except FileNotFoundError:
            return None

    def _check_row(self) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sealed_secrets.c.value)
                                .where(sealed_secrets.c.name == CHECK_NAME)).scalar()

    def _insert(self, name: str, value: str) -> None:
        """Store ``name`` unless another node stored it first (theirs wins)."""
        try:
            with self.engine.begin() as conn:
                conn.execute(sealed_secrets.insert().values(name=name, value=value))
        except IntegrityError:
            pass

    def _cipher(self) -> AESGCM:
        with self._lock:
            if self._aead is not None:
                return self._aead
        key = self._given_key()
        check = self._check_row()
        if check is None:
            if key is None:
                key = load_key(self.master_path)  # the cluster's first node makes it (0600, service user's)
            self._insert(CHECK_NAME, self._seal_with(AESGCM(key), CHECK_PLAIN, CHECK_NAME, fingerprint(key)))
            check = self._check_row()
            assert check is not None
        expected = check.rsplit(":", 1)[-1]
        if key is None:
            raise VaultError(f"this node has no cluster master key (fingerprint {expected}): copy "
                             f"{MASTER_RELPATH} from a node of the cluster into {self.data_dir}, or set ${ENV}")
        aead = AESGCM(key)
        try:
            self._open_with(aead, check, CHECK_NAME)
        except VaultError:
            raise VaultError(f"this node's master key (fingerprint {fingerprint(key)}) is not the cluster's "
                             f"(fingerprint {expected}): copy {MASTER_RELPATH} from a node of the cluster, "
                             f"or set ${ENV} to it") from None
        with self._lock:
            self._aead = aead
        return aead

    def check(self) -> str:
        """The master key's fingerprint once it opens the cluster's keys; ``VaultError`` otherwise."""
        self._cipher()
        key = self._given_key()
        assert key is not None
        return fingerprint(key)

    # --- sealing -------------------------------------------------------------------------------

    @staticmethod
    def _seal_with(aead: AESGCM, value: bytes, purpose: str, tag: str = "") -> str:
        nonce = os.urandom(NONCE_BYTES)
        body = base64.b64encode(nonce + aead.encrypt(nonce, value, purpose.encode())).decode()
        return PREFIX + body + (f":{tag}" if tag else "")

    @staticmethod
    def _open_with(aead: AESGCM, stored: str, purpose: str) -> bytes:
        if not stored.startswith(PREFIX):
            raise VaultError(f"the sealed {purpose} is not in a known form")
        body = stored[len(PREFIX):].split(":", 1)[0]
        try:
            raw = base64.b64decode(body, validate=True)
            return aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], purpose.encode())
        except (InvalidTag, ValueError):
            raise VaultError(f"the sealed {purpose} cannot be opened with this node's master key") from None

    def seal(self, value: bytes, purpose: str) -> str:
        return self._seal_with(self._cipher(), value, purpose)

    def open(self, stored: str, purpose: str) -> bytes:
        return self._open_with(self._cipher(), stored, purpose)

    # --- installation secrets ------------------------------------------------------------------

    def secret(self, relpath: Path) -> bytes:
        """The cluster's 32-byte secret named by its file under the data directory (``secrets/x.key``):
        the one in the database; the first node to ask stores its own file's (when it has one, so what
        it sealed before stays readable) or a new one."""
        name = f"secret:{Path(relpath).name}"
        with self._lock:
            if name in self._secrets:
                return self._secrets[name]
        with self.engine.connect() as conn:
            stored = conn.execute(sa.select(sealed_secrets.c.value).where(sealed_secrets.c.name == name)).scalar()
        if stored is None:
            local = self.data_dir / relpath
            value = bytes.fromhex(local.read_text().strip()) if local.is_file() else os.urandom(32)
            self._insert(name, self.seal(value, name))
            with self.engine.connect() as conn:
                stored = conn.execute(sa.select(sealed_secrets.c.value)
                                      .where(sealed_secrets.c.name == name)).scalar_one()
        value = self.open(stored, name)
        with self._lock:
            self._secrets[name] = value
        return value


def installation_key(data_dir: Path, relpath: Path, engine: Engine | None = None) -> bytes:
    """A 32-byte key of the installation: the cluster's (sealed in PostgreSQL) when ``engine`` is a
    cluster's, else this data directory's file (``sealing.load_key``), as a single node always had."""
    if shares_keys(engine):
        assert engine is not None
        return Vault(engine, data_dir).secret(relpath)
    return load_key(Path(data_dir) / relpath)


def credentials_sealer(data_dir: Path, engine: Engine | None = None) -> Sealer:
    """The sealer of relay secrets, IMAP-source passwords and webhook secrets: under the cluster's
    credentials key with a cluster's ``engine`` (found at first use), else this data directory's."""
    if shares_keys(engine):
        assert engine is not None
        vault = Vault(engine, data_dir)
        return Sealer(lambda: vault.secret(KEY_RELPATH))
    return Sealer.for_data_dir(data_dir)
