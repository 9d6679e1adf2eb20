"""Credentials Dovetail must use as they are (relay AUTH secrets, IMAP-source passwords, webhook signing
secrets) sealed at rest.

They cannot be hashed, as login passwords are: Dovetail itself must send them. Sealed with AES-256-GCM
under a key of the installation (``<data>/secrets/credentials.key``, mode 0600, made by ``init`` so the
service user owns it), the database alone no longer gives them away: a dump or a backup of the
database without the data directory's ``secrets/`` holds no usable credential. Each value is bound
to what it is for (the GCM associated data), so a sealed relay secret cannot be passed off as an
IMAP password. A stored value without the ``sealed:v1:`` prefix is one written before sealing existed
and is read as it is (and sealed the next time it is set).
"""

from __future__ import annotations

import base64
import os
import secrets
import threading
from collections.abc import Callable
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_RELPATH = Path("secrets") / "credentials.key"
PREFIX = "sealed:v1:"
NONCE_BYTES = 12


class SealError(ValueError):
    """A sealed value that this installation's key cannot open."""


def load_key(path: Path) -> bytes:
    """The 32-byte key in ``path`` (``<data>/secrets/<name>``, hex), created with mode 0600 the first
    time (by root: owned by the data directory's owner, the service user, who must read it); concurrent
    first callers agree on one key (the first link wins)."""
    path = Path(path)
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, secrets.token_bytes(32).hex().encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    if os.geteuid() == 0:
        owner = os.stat(path.parent.parent)
        for made in (path.parent, tmp):
            os.chown(made, owner.st_uid, owner.st_gid)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    return bytes.fromhex(path.read_text().strip())


def is_sealed(value: str | None) -> bool:
    return value is not None and value.startswith(PREFIX)


class Sealer:
    """Seals and opens credential strings with the installation's key.

    The key may be given as a function that finds it (a cluster's, in its database: ``dovetail.vault``),
    called at the first seal or open, so a service that never needs it starts without it."""

    def __init__(self, key: bytes | Callable[[], bytes]) -> None:
        self._find_key = key if callable(key) else None
        self._aead: AESGCM | None = None
        self._lock = threading.Lock()
        if not callable(key):
            self._aead = self._cipher_of(key)

    @staticmethod
    def _cipher_of(key: bytes) -> AESGCM:
        if len(key) != 32:
            raise ValueError("a credentials key is 32 bytes")
        return AESGCM(key)

    @property
    def _cipher(self) -> AESGCM:
        with self._lock:
            if self._aead is None:
                assert self._find_key is not None
                self._aead = self._cipher_of(self._find_key())
            return self._aead

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> Sealer:
        return cls(load_key(Path(data_dir) / KEY_RELPATH))

    def seal(self, value: str, purpose: str) -> str:
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._cipher.encrypt(nonce, value.encode("utf-8"), purpose.encode())
        return PREFIX + base64.b64encode(nonce + sealed).decode()

    def open(self, stored: str | None, purpose: str) -> str | None:
        """The value of ``stored``; a value stored before sealing existed comes back as it is."""
        if not is_sealed(stored):
            return stored
        assert stored is not None
        try:
            raw = base64.b64decode(stored[len(PREFIX):], validate=True)
            return self._cipher.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], purpose.encode()).decode("utf-8")
        except (InvalidTag, ValueError) as exc:
            raise SealError(f"a sealed {purpose} cannot be opened with this data directory's key "
                            f"({KEY_RELPATH})") from exc
