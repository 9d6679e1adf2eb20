"""Reply tokens: per outbound message, unguessable and tamper-evident.

A token is ``base32(nonce || HMAC-SHA256(secret, tenant_id || nonce)[:10])``, lowercase, 32
characters: it fits a plus address (``reply+<token>@inbound.example``) or a VERP return path, and
survives MTAs that change the case of local parts. The MAC binds the token to its tenant, so a token
is checked before any database lookup and never resolves in another tenant.

A bounce token (the VERP return path ``bounce+<token>@``) is derived from a message's reply token: the
same nonce under a MAC of another purpose, so it names the same registered message, a reply token
seen in a Reply-To cannot be turned into a bounce token, and no column is needed to store it.

The key is one per installation, kept in ``<data>/secrets/reply_token.key`` (created on first use,
mode 0600).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from pathlib import Path

from dovetail.datadir import Layout
from dovetail.sealing import load_key

NONCE_BYTES = 10
MAC_BYTES = 10
TOKEN_LENGTH = 32  # base32 of 20 bytes
_TOKEN_RE = re.compile(r"[a-z2-7]{32}")


def load_secret(data_dir: Path) -> bytes:
    """The installation's token key, created with 0600 the first time it is needed."""
    return load_key(Layout(Path(data_dir)).reply_token_key)


def _mac(secret: bytes, tenant_id: int, nonce: bytes) -> bytes:
    return hmac.new(secret, b"%d\x00" % tenant_id + nonce, hashlib.sha256).digest()[:MAC_BYTES]


def new_token(secret: bytes, tenant_id: int) -> str:
    nonce = secrets.token_bytes(NONCE_BYTES)
    return base64.b32encode(nonce + _mac(secret, tenant_id, nonce)).decode().lower()


def _bounce_mac(secret: bytes, tenant_id: int, nonce: bytes) -> bytes:
    return hmac.new(secret, b"bounce\x00%d\x00" % tenant_id + nonce, hashlib.sha256).digest()[:MAC_BYTES]


def bounce_token(secret: bytes, tenant_id: int, reply_token: str) -> str | None:
    """The VERP token of the message whose reply token is ``reply_token`` (``None`` if not ours)."""
    if not verify_token(secret, tenant_id, reply_token):
        return None
    nonce = base64.b32decode(reply_token.strip().upper())[:NONCE_BYTES]
    return base64.b32encode(nonce + _bounce_mac(secret, tenant_id, nonce)).decode().lower()


def reply_token_of_bounce(secret: bytes, tenant_id: int, token: str) -> str | None:
    """The reply token a bounce token was derived from, or ``None`` for a forged or foreign one."""
    token = token.strip().lower()
    if not _TOKEN_RE.fullmatch(token):
        return None
    raw = base64.b32decode(token.upper())
    nonce, mac = raw[:NONCE_BYTES], raw[NONCE_BYTES:]
    if not hmac.compare_digest(mac, _bounce_mac(secret, tenant_id, nonce)):
        return None
    return base64.b32encode(nonce + _mac(secret, tenant_id, nonce)).decode().lower()


def verify_token(secret: bytes, tenant_id: int, token: str) -> bool:
    """True when ``token`` was minted by this installation for this tenant."""
    token = token.strip().lower()
    if not _TOKEN_RE.fullmatch(token):
        return False
    raw = base64.b32decode(token.upper())
    nonce, mac = raw[:NONCE_BYTES], raw[NONCE_BYTES:]
    return hmac.compare_digest(mac, _mac(secret, tenant_id, nonce))


def find_tokens(text: str) -> list[str]:
    """Token-shaped strings in an address or header (candidates; each must still be verified)."""
    return list(dict.fromkeys(m.lower() for m in re.findall(r"(?<![A-Za-z2-7])[A-Za-z2-7]{32}(?![A-Za-z2-7])",
                                                            text)))


def bounce_token_of(local: str) -> str | None:
    """The token of a VERP local part ``bounce+<token>``, else None."""
    prefix, sep, token = local.lower().partition("+")
    return token if sep and prefix == "bounce" and token else None


def reply_address(token: str, domain: str, local: str = "reply", separator: str = "+") -> str:
    """The plus address replies should go to: ``reply+<token>@domain``."""
    return f"{local}{separator}{token}@{domain}"
