"""SRS (the Sender Rewriting Scheme): forwarded mail leaves with an envelope sender of our domain.

An alias forwarding ``alice@gmail.example``'s mail to an external address must not present her address
as MAIL FROM: SPF at the destination would fail, since we are not her domain's server. The sender is
rewritten to ``SRS0=HHHH=TT=gmail.example=alice@<alias domain>``, and a bounce to that address is routed
back to her (``reverse``, a step of the recipient resolver). ``HHHH`` is an HMAC of the rest under a
secret of the installation, so nobody can make us relay to an address of their choosing; ``TT`` is the
day, so an address stops working after ``max_age_days``. Already-rewritten senders become ``SRS1``
(the "guarded" scheme), so a chain of forwarders never grows the address without bound.

The format, hash (HMAC-SHA1, base64, 4 characters, compared without case) and base32 day stamp are
those of pysrs and of libsrs2 (Postfix's postsrsd), so addresses made by either are understood; pysrs
itself is not used because its last release (2018) calls ``base64.encodestring``, gone since Python 3.9.
The secret is ``<data>/secrets/srs.key``, kept as the project keeps its other secrets (``sealing``); on
a PostgreSQL cluster it is the cluster's (``vault``), so a bounce to an address one node rewrote is
reversed by whichever node receives it. It is read at first use: a node not yet given the cluster's
master key starts, and says why when it needs the secret.

It lives in the directory, next to the resolver that reverses it (the layer below the MX and outbound).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..datadir import Layout
from ..vault import installation_key

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
DAY = 86400
TICKSLOTS = 1024  # two base32 characters
HASH_LENGTH = 4
SEPARATOR = "="
_TAG = re.compile(r"\A(SRS[01])[-+=]", re.IGNORECASE)


class SrsError(ValueError):
    """An SRS address that is not ours to reverse: forged hash, expired, or malformed."""


def is_srs(local: str) -> bool:
    """Whether a local part is an SRS address (``SRS0=``/``SRS1=``, any case, any pysrs separator)."""
    return _TAG.match(local) is not None


class Srs:
    """Forward and reverse SRS addresses under one secret (older secrets still reverse)."""

    def __init__(self, secret: bytes | Callable[[], bytes], *, max_age_days: int = 21,
                 old_secrets: tuple[bytes, ...] = ()) -> None:
        if not secret:
            raise ValueError("an SRS secret must not be empty")
        self._source = secret
        self._secret = secret if isinstance(secret, bytes) else b""
        self._old = old_secrets
        self.max_age_days = max_age_days

    @property
    def secret(self) -> bytes:
        if not self._secret:
            assert callable(self._source)
            value = self._source()
            if not value:
                raise ValueError("an SRS secret must not be empty")
            self._secret = value
        return self._secret

    @property
    def secrets(self) -> tuple[bytes, ...]:
        return (self.secret, *self._old)

    @classmethod
    def for_data_dir(cls, data_dir: Path, *, max_age_days: int = 21, engine: Engine | None = None) -> Srs:
        """The installation's SRS secret (made on first use, 0600, owned as the data directory), or the
        cluster's with a PostgreSQL ``engine``."""
        layout = Layout(Path(data_dir))
        relpath = layout.srs_key.relative_to(layout.root)
        return cls(lambda: installation_key(layout.root, relpath, engine), max_age_days=max_age_days)

    # --- the pieces ----------------------------------------------------------------------------

    def _hash(self, secret: bytes, *parts: str) -> str:
        mac = hmac.new(secret, b"", hashlib.sha1)
        for part in parts:
            mac.update(part.lower().encode("utf-8"))
        return base64.b64encode(mac.digest()).decode()[:HASH_LENGTH]

    def _hash_ok(self, given: str, *parts: str) -> bool:
        if len(given) != HASH_LENGTH:
            return False
        return any(hmac.compare_digest(self._hash(s, *parts).lower(), given.lower()) for s in self.secrets)

    @staticmethod
    def timestamp(now: float | None = None) -> str:
        days = int((time.time() if now is None else now) // DAY)
        return BASE32[(days >> 5) & 31] + BASE32[days & 31]

    def _timestamp_ok(self, stamp: str, now: float | None = None) -> bool:
        if len(stamp) != 2 or any(c not in BASE32 for c in stamp.upper()):
            return False
        then = BASE32.index(stamp[0].upper()) * 32 + BASE32.index(stamp[1].upper())
        today = int((time.time() if now is None else now) // DAY) % TICKSLOTS
        age = (today - then) % TICKSLOTS
        return age <= self.max_age_days

    # --- forward and reverse -------------------------------------------------------------------

    def forward(self, sender: str, domain: str, *, now: float | None = None) -> str:
        """The envelope sender to use when forwarding mail from ``sender`` as ``domain``.

        The null sender stays null (a bounce is never rewritten); a sender of ``domain`` itself is kept."""
        local, at, host = sender.rpartition("@")
        if not sender or not at or not local:
            return sender
        if host.lower() == domain.lower():
            return sender
        tag = _TAG.match(local)
        if tag and tag.group(1).upper() == "SRS1":
            # already guarded: keep the first forwarder's host and its opaque part, re-sign them
            try:
                _old_hash, srs_host, srs_user = local[5:].split(SEPARATOR, 2)
            except ValueError:
                tag = None
            else:
                return f"SRS1{SEPARATOR}{self._hash(self.secret, srs_host, srs_user)}{SEPARATOR}" \
                       f"{srs_host}{SEPARATOR}{srs_user}@{domain}"
        if tag and tag.group(1).upper() == "SRS0":
            srs_user = local[4:]  # starts with its separator: "=HHHH=TT=host=user"
            return f"SRS1{SEPARATOR}{self._hash(self.secret, host, srs_user)}{SEPARATOR}{host}{SEPARATOR}" \
                   f"{srs_user}@{domain}"
        stamp = self.timestamp(now)
        digest = self._hash(self.secret, stamp, host, local)
        return SEPARATOR.join(("SRS0", digest, stamp, host, local)) + f"@{domain}"

    def reverse(self, local: str, *, now: float | None = None) -> str:
        """The address a bounce to ``local@<our domain>`` goes back to; ``SrsError`` when it is forged,
        expired or no SRS address."""
        tag = _TAG.match(local)
        if tag is None:
            raise SrsError("not an SRS address")
        rest = local[5:]
        if tag.group(1).upper() == "SRS1":
            parts = rest.split(SEPARATOR, 2)
            if len(parts) != 3 or not all(parts[:2]) or not parts[2]:
                raise SrsError("malformed SRS1 address")
            digest, srs_host, srs_user = parts
            if not self._hash_ok(digest, srs_host, srs_user):
                raise SrsError("SRS hash does not match (forged address)")
            return f"SRS0{srs_user}@{srs_host}"
        parts = rest.split(SEPARATOR, 3)
        if len(parts) != 4 or not all(parts):
            raise SrsError("malformed SRS0 address")
        digest, stamp, host, user = parts
        if not self._hash_ok(digest, stamp, host, user):
            raise SrsError("SRS hash does not match (forged address)")
        if not self._timestamp_ok(stamp, now):
            raise SrsError("SRS address has expired")
        return f"{user}@{host}"
