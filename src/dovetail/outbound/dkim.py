"""DKIM signing (RFC 6376) with relaxed/relaxed canonicalisation, RSA-SHA256 and Ed25519-SHA256 (RFC 8463).

Hand-written rather than ``dkim.sign`` from dkimpy because dkimpy does RSA in pure Python (about
140 signatures/s); here canonicalisation is a few bytes regexes and the signature is one call into
``cryptography`` (OpenSSL). dkimpy remains the verifier in the tests, so the two are checked against
each other. Sans-I/O: bytes in, a header line out. Canonicalisation lives in ``mailauth.dkimcanon``,
shared with the inbound verifiers.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from dovetail.mailauth.dkimcanon import DkimFormatError, relaxed_body, relaxed_header, split_message, to_crlf

# What we sign: the headers a receiver shows or acts on. ``from`` is signed once more than it occurs
# ("oversigning") so a second From: added in transit breaks the signature.
SIGNED_HEADERS = (
    "from", "sender", "reply-to", "subject", "date", "message-id", "to", "cc", "mime-version",
    "content-type", "content-transfer-encoding", "content-disposition", "in-reply-to", "references",
    "list-id", "list-unsubscribe", "list-unsubscribe-post", "feedback-id",
)
OVERSIGNED = ("from",)

# A message we cannot sign (no header section, no From:); canonicalisation raises it too.
DkimError = DkimFormatError


@dataclass(frozen=True)
class SigningKey:
    """One selector's private key. ``algorithm`` is ``rsa-sha256`` or ``ed25519-sha256``."""

    domain: str
    selector: str
    algorithm: str
    private_key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

    @classmethod
    def from_pem(cls, domain: str, selector: str, pem: bytes) -> SigningKey:
        key = serialization.load_pem_private_key(pem, password=None)
        if isinstance(key, rsa.RSAPrivateKey):
            return cls(domain, selector, "rsa-sha256", key)
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return cls(domain, selector, "ed25519-sha256", key)
        raise DkimError(f"unsupported DKIM key type {type(key).__name__}")

    def sign_digest_input(self, data: bytes) -> bytes:
        if isinstance(self.private_key, rsa.RSAPrivateKey):
            return self.private_key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        # RFC 8463 §3: Ed25519 signs the SHA-256 hash of the header data, not the data itself.
        return self.private_key.sign(hashlib.sha256(data).digest())


def _select(fields: list[tuple[bytes, bytes]], names: Iterable[str]) -> tuple[list[str], list[bytes]]:
    """The h= list and the header fields it covers, each instance picked from the bottom up (§5.4.2)."""
    present: dict[bytes, list[bytes]] = {}
    for field_name, raw in fields:
        present.setdefault(field_name, []).append(raw)
    h: list[str] = []
    chosen: list[bytes] = []
    for name in names:
        instances = present.get(name.encode())
        if not instances:
            continue
        for raw in reversed(instances):
            h.append(name)
            chosen.append(raw)
        if name in OVERSIGNED:
            h.append(name)
    return h, chosen


def _fold_b64(value: str, width: int = 76) -> str:
    return "\r\n\t".join(value[i:i + width] for i in range(0, len(value), width))


def sign(message: bytes, keys: Sequence[SigningKey], *, headers: Iterable[str] = SIGNED_HEADERS,
         timestamp: int | None = None, expire_after: int | None = None) -> bytes:
    """The ``DKIM-Signature:`` header lines (one per key, CRLF-terminated) to prepend to ``message``.

    The body hash is computed once and shared by all keys (RSA and Ed25519 side by side).
    """
    if not keys:
        return b""
    message = to_crlf(message)
    fields, body = split_message(message)
    if not any(name == b"from" for name, _ in fields):
        raise DkimError("message has no From: header")
    bh = base64.b64encode(hashlib.sha256(relaxed_body(body)).digest()).decode()
    h, chosen = _select(fields, headers)
    signed = b"".join(relaxed_header(raw) + b"\r\n" for raw in chosen)
    t = int(time.time()) if timestamp is None else timestamp
    out = []
    for key in keys:
        tags = [f"v=1; a={key.algorithm}; c=relaxed/relaxed; d={key.domain}; s={key.selector};",
                f"t={t};" + (f" x={t + expire_after};" if expire_after else ""),
                f"h={':'.join(h)};",
                f"bh={bh};",
                "b="]
        header = "DKIM-Signature: " + "\r\n\t".join(tags)
        data = signed + relaxed_header(header.encode())
        b = base64.b64encode(key.sign_digest_input(data)).decode()
        out.append((header + _fold_b64(b) + "\r\n").encode())
    return b"".join(out)


def dns_txt_value(private_key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> str:
    """The TXT record to publish at ``<selector>._domainkey.<domain>``."""
    pub = private_key.public_key()
    if isinstance(pub, rsa.RSAPublicKey):
        der = pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}"


def txt_chunks(value: str) -> list[str]:
    """A TXT value split into character-strings of at most 255 octets (RFC 1035 §3.3.14)."""
    return [value[i:i + 255] for i in range(0, len(value), 255)] or [""]
