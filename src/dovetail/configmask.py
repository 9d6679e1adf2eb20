"""What ``dovetail config show`` hides: secrets are printed as ``********`` unless ``--show-secrets``.

A key holds a secret when its last part names one (``cluster.secret``, ``…password``, ``…token``,
``…_key`` holding key material rather than a file name); a URL (``database.url``, ``events.nats_url``,
``mx.rspamd_url``, …) keeps its scheme, user and host and loses only the password of its user part,
as ``postconf`` users expect from tools that print configuration (and as SQLAlchemy renders a URL).
"""

from __future__ import annotations

import re
from typing import Any

MASK = "********"

_SECRET_NAME = re.compile(r"(^|_)(secret|password|passwd|token|psk|api_key|private_key)$")
_URL_PASSWORD = re.compile(r"^(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^/?#@:]*:)(?P<password>[^/?#@]*)(?P<tail>@.*)$",
                           re.S)


def is_secret_key(key: str) -> bool:
    """Whether the whole value of ``key`` is a secret."""
    return bool(_SECRET_NAME.search(key.rsplit(".", 1)[-1].lower()))


def mask_url(value: str) -> str:
    """``scheme://user:PASSWORD@host/...`` with the password masked; anything else as it is."""
    m = _URL_PASSWORD.match(value)
    if m is None or not m.group("password"):
        return value
    return f"{m.group('head')}{MASK}{m.group('tail')}"


def masked(key: str, value: Any) -> Any:
    """``value`` of ``key`` as ``config show`` prints it by default."""
    if is_secret_key(key):
        return MASK if value not in ("", None) else value
    if isinstance(value, str):
        return mask_url(value)
    if isinstance(value, list):
        return [mask_url(v) if isinstance(v, str) else v for v in value]
    return value
