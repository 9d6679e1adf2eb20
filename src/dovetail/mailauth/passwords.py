"""Password hashing and verification, compatible with Dovecot's scheme-prefixed hashes.

New hashes are ``{ARGON2ID}$argon2id$...`` (argon2-cffi). Verification understands what a Dovecot
passwd-file holds so users can be imported as they are: ARGON2ID/ARGON2I, BLF-CRYPT (bcrypt),
SHA512-CRYPT/SHA256-CRYPT (passlib's implementation, as the stdlib ``crypt`` module is gone
in Python 3.13), SSHA512/SSHA256/SSHA, SHA512/SHA256, PLAIN and CLEAR.

Argon2id costs ~170 ms a check: ``verify_async`` runs it in a thread, and successful checks are
remembered (keyed by a salted digest, never the password) so an IMAP client that logs in many
times does not pay each time.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import re
import threading
from collections import OrderedDict

import argon2
import bcrypt
from passlib.hash import sha256_crypt, sha512_crypt

_hasher = argon2.PasswordHasher()  # argon2id, library defaults (t=3, m=64 MiB, p=4)

SCHEMES = ("ARGON2ID", "ARGON2I", "BLF-CRYPT", "SHA512-CRYPT", "SHA256-CRYPT", "SSHA512", "SSHA256", "SSHA",
           "SHA512", "SHA256", "PLAIN", "CLEAR")


class UnknownScheme(ValueError):
    """The stored hash names a scheme we do not verify."""


def hash_password(password: str) -> str:
    """A new ``{ARGON2ID}`` hash, as ``doveadm pw -s ARGON2ID`` writes it."""
    return "{ARGON2ID}" + _hasher.hash(password)


def split_scheme(stored: str) -> tuple[str, str]:
    m = re.match(r"^\{([A-Za-z0-9.-]+)\}(.*)$", stored, re.S)
    if m:
        return m.group(1).upper(), m.group(2)
    # Bare crypt strings as found in older passwd-files.
    if stored.startswith("$argon2id$"):
        return "ARGON2ID", stored
    if stored.startswith(("$2a$", "$2b$", "$2y$")):
        return "BLF-CRYPT", stored
    if stored.startswith("$6$"):
        return "SHA512-CRYPT", stored
    if stored.startswith("$5$"):
        return "SHA256-CRYPT", stored
    raise UnknownScheme("hash has no {SCHEME} prefix")


def _salted(digest_name: str, encoded: str, password: bytes, size: int) -> bool:
    try:
        raw = base64.b64decode(encoded, validate=True)
    except ValueError:
        try:
            raw = bytes.fromhex(encoded)
        except ValueError:
            return False
    if len(raw) <= size:
        return False
    digest, salt = raw[:size], raw[size:]
    return hmac.compare_digest(hashlib.new(digest_name, password + salt).digest(), digest)


def _plain_digest(digest_name: str, encoded: str, password: bytes) -> bool:
    want = hashlib.new(digest_name, password).digest()
    try:
        raw = base64.b64decode(encoded, validate=True)
    except ValueError:
        raw = b""
    if len(raw) != len(want):
        try:
            raw = bytes.fromhex(encoded)
        except ValueError:
            return False
    return hmac.compare_digest(raw, want)


def verify_password(stored: str | None, password: str) -> bool:
    """True when ``password`` matches ``stored``; False on mismatch or an unusable hash."""
    if not stored:
        return False
    try:
        scheme, value = split_scheme(stored)
    except UnknownScheme:
        return False
    pw = password.encode("utf-8")
    try:
        if scheme in ("ARGON2ID", "ARGON2I", "ARGON2"):
            return _hasher.verify(value, password)
        if scheme in ("BLF-CRYPT", "BCRYPT"):
            return bcrypt.checkpw(pw, value.replace("$2y$", "$2b$", 1).encode())
        if scheme == "SHA512-CRYPT":
            return sha512_crypt.verify(password, value)
        if scheme == "SHA256-CRYPT":
            return sha256_crypt.verify(password, value)
        if scheme == "SSHA512":
            return _salted("sha512", value, pw, 64)
        if scheme == "SSHA256":
            return _salted("sha256", value, pw, 32)
        if scheme == "SSHA":
            return _salted("sha1", value, pw, 20)
        if scheme == "SHA512":
            return _plain_digest("sha512", value, pw)
        if scheme == "SHA256":
            return _plain_digest("sha256", value, pw)
        if scheme in ("PLAIN", "CLEAR"):
            return hmac.compare_digest(value.encode("utf-8"), pw)
    except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError, ValueError):
        return False
    return False


class VerifyCache:
    """Remembers recent successful (hash, password) pairs by a keyed digest, so repeated logins are cheap."""

    def __init__(self, size: int = 10_000) -> None:
        self._key = os.urandom(32)
        self._ok: OrderedDict[bytes, None] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def _digest(self, stored: str, password: str) -> bytes:
        return hmac.new(self._key, stored.encode() + b"\0" + password.encode("utf-8", "surrogatepass"),
                        hashlib.sha256).digest()

    def verify(self, stored: str | None, password: str) -> bool:
        if not stored:
            return False
        key = self._digest(stored, password)
        with self._lock:
            if key in self._ok:
                self._ok.move_to_end(key)
                return True
        ok = verify_password(stored, password)
        if ok:
            with self._lock:
                self._ok[key] = None
                if len(self._ok) > self._size:
                    self._ok.popitem(last=False)
        return ok


_default_cache = VerifyCache()


async def verify_async(stored: str | None, password: str, cache: VerifyCache | None = None) -> bool:
    """Verify off the event loop (Argon2 takes ~170 ms)."""
    return await asyncio.to_thread((cache or _default_cache).verify, stored, password)


def parse_passwd_line(line: str) -> tuple[str, str] | None:
    """``user:{SCHEME}hash:uid:gid:gecos:home:shell:extra`` (Dovecot passwd-file) → (user, hash)."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    parts = text.split(":")
    if len(parts) < 2 or not parts[0]:
        raise ValueError("expected user:password[:uid:gid:gecos:home:shell:extra]")
    return parts[0], parts[1]
