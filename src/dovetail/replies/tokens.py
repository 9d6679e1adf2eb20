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

A one-click unsubscribe token (RFC 8058, the ``https:`` form of List-Unsubscribe) names one recipient of
one message: ``base32(version || tenant id || issue day || reply token || HMAC(...)[:16])`` where the MAC
covers all of it *and* the recipient's address, so it is checked against the outbound message the reply
token names without putting the address in the URL. The issue day (days since 1970-01-01, UTC) lets a
link expire. It is longer than a reply token, which is fine in a URL; the ``mailto:`` form keeps the
short reply token, whose unsubscribe is checked by the replies pipeline.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import Engine

from dovetail.datadir import Layout
from dovetail.vault import installation_key

NONCE_BYTES = 10
MAC_BYTES = 10
TOKEN_LENGTH = 32  # base32 of 20 bytes
_TOKEN_RE = re.compile(r"[a-z2-7]{32}")


def load_secret(data_dir: Path, engine: Engine | None = None) -> bytes:
    """The installation's token key, created with 0600 the first time it is needed; on a PostgreSQL
    cluster (``engine``) the cluster's, so a reply reaching any node verifies."""
    layout = Layout(Path(data_dir))
    return installation_key(layout.root, layout.reply_token_key.relative_to(layout.root), engine)


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


UNSUBSCRIBE_VERSION = 1
_UNSUB_HEAD = struct.Struct(">BIH")  # version, tenant id, issue day
UNSUB_MAC_BYTES = 16
_UNSUB_RAW = _UNSUB_HEAD.size + NONCE_BYTES + MAC_BYTES + UNSUB_MAC_BYTES
_UNSUB_RE = re.compile("[a-z2-7]{" + str(-(-_UNSUB_RAW * 8 // 5)) + "}")


@dataclass(frozen=True)
class UnsubscribeToken:
    """The parts of a well-formed one-click token; :func:`unsubscribe_mac_ok` says whether it is genuine."""

    tenant_id: int
    issued_day: int
    reply_token: str
    mac: bytes


def today() -> int:
    """Days since 1970-01-01 in UTC: the issue date of an unsubscribe token."""
    return int(time.time() // 86400)


def _unsub_mac(secret: bytes, head: bytes, reply_raw: bytes, recipient: str) -> bytes:
    data = b"unsubscribe\x00" + head + reply_raw + recipient.strip().lower().encode()
    return hmac.new(secret, data, hashlib.sha256).digest()[:UNSUB_MAC_BYTES]


def new_unsubscribe_token(secret: bytes, tenant_id: int, reply_token: str, recipient: str,
                          issued_day: int | None = None) -> str:
    """The one-click token of ``recipient`` of the message carrying ``reply_token`` (one of ours)."""
    if not _TOKEN_RE.fullmatch(reply_token):
        raise ValueError("an unsubscribe token needs a reply token minted here")
    head = _UNSUB_HEAD.pack(UNSUBSCRIBE_VERSION, tenant_id, today() if issued_day is None else issued_day)
    reply_raw = base64.b32decode(reply_token.upper())
    raw = head + reply_raw + _unsub_mac(secret, head, reply_raw, recipient)
    return base64.b32encode(raw).decode().rstrip("=").lower()


def parse_unsubscribe_token(token: str) -> UnsubscribeToken | None:
    """The parts of a one-click token, or None when it is not shaped like one (no secret needed)."""
    token = token.strip().lower()
    if not _UNSUB_RE.fullmatch(token):
        return None
    raw = base64.b32decode(token.upper() + "=" * (-len(token) % 8))
    if base64.b32encode(raw).decode().rstrip("=").lower() != token:
        return None  # stray bits in the last character: one spelling per token
    version, tid, day = _UNSUB_HEAD.unpack_from(raw)
    if version != UNSUBSCRIBE_VERSION:
        return None
    reply_raw = raw[_UNSUB_HEAD.size:_UNSUB_HEAD.size + NONCE_BYTES + MAC_BYTES]
    return UnsubscribeToken(tid, day, base64.b32encode(reply_raw).decode().lower(), raw[-UNSUB_MAC_BYTES:])


def unsubscribe_mac_ok(secret: bytes, parsed: UnsubscribeToken, recipient: str) -> bool:
    """True when ``parsed`` was minted here for ``recipient`` (with this tenant, day and message)."""
    head = _UNSUB_HEAD.pack(UNSUBSCRIBE_VERSION, parsed.tenant_id, parsed.issued_day)
    reply_raw = base64.b32decode(parsed.reply_token.upper())
    return hmac.compare_digest(parsed.mac, _unsub_mac(secret, head, reply_raw, recipient))
