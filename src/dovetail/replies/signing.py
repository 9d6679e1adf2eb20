"""Standard Webhooks signatures (https://www.standardwebhooks.com): sign on our side, verify on theirs.

``webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`` with the key the
base64 part of a ``whsec_...`` secret. ``verify`` is what a receiver runs: it checks the signature
in constant time and refuses timestamps outside a tolerance, so a captured request cannot be
replayed later; the ``webhook-id`` lets the receiver drop a redelivered event it already handled.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping
from typing import Any

PREFIX = "whsec_"
DEFAULT_TOLERANCE = 300  # seconds, as the Standard Webhooks libraries use


class WebhookVerificationError(ValueError):
    """The request is not a fresh, correctly signed webhook from the holder of the secret."""


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def _key(secret: str) -> bytes:
    text = secret[len(PREFIX):] if secret.startswith(PREFIX) else secret
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise WebhookVerificationError("malformed secret") from None


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(_key(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signed_headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secret, msg_id, timestamp, body), "content-type": "application/json"}


def verify(secret: str, headers: Mapping[str, str], body: bytes, *, tolerance: int = DEFAULT_TOLERANCE,
           now: float | None = None) -> Any:
    """Check a received webhook and return its decoded JSON body; raise on any mismatch."""
    lower = {k.lower(): v for k, v in headers.items()}
    msg_id = lower.get("webhook-id", "")
    stamp = lower.get("webhook-timestamp", "")
    sigs = lower.get("webhook-signature", "")
    if not msg_id or not stamp or not sigs:
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        ts = int(stamp)
    except ValueError:
        raise WebhookVerificationError("malformed webhook-timestamp") from None
    current = time.time() if now is None else now
    if ts < current - tolerance:
        raise WebhookVerificationError("timestamp too old (replay?)")
    if ts > current + tolerance:
        raise WebhookVerificationError("timestamp in the future")
    expected = sign(secret, msg_id, ts, body).split(",", 1)[1]
    for candidate in sigs.split(" ")[:20]:
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value.encode(), expected.encode()):
            try:
                return json.loads(body)
            except ValueError:
                raise WebhookVerificationError("body is not JSON") from None
    raise WebhookVerificationError("no matching signature")
