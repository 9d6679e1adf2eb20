"""The proof a front node gives a mailbox's home node that it checked the user's password itself.

A login proxied inside the cluster (:mod:`dovetail.imap.proxy`) reaches the home node without the
user's password. The front signs what it vouches for (the user, the client's address, the hop count
left and the time) with HMAC-SHA256 under ``cluster.secret``; the home node recomputes the signature and
accepts the login only if it matches, is fresh and came from a node's address. The token travels as
the password of an IMAP ``LOGIN`` after an ``ID`` carrying the same facts, so the wire stays plain IMAP.

A token is good for ``FRESH`` seconds either way of the home node's clock, and once: a home node given
``replays`` (:mod:`dovetail.mailauth.replays`, shared by its workers) remembers the tokens it accepted
until they expire and refuses a second use, so one copied off the wire cannot be replayed there.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Protocol

PREFIX = "dovetail-proxy:v1:"
FRESH = 60.0  # seconds a token is good for, either side of the receiving clock
DEFAULT_TTL = 5  # hops a proxied login may take (Dovecot's proxy_ttl default)


class Replays(Protocol):
    """The tokens a node accepted, kept until they expire."""

    def first_use(self, key: str, until: float) -> bool:
        """Remember ``key`` until ``until`` (unix time); False when it was already remembered."""
        ...


@dataclass(frozen=True)
class Grant:
    """What the front vouches for: whose login, from which client, with how many hops left."""

    user: str
    client_ip: str
    client_port: int
    ttl: int


def _mac(secret: str, grant: Grant, stamp: int, nonce: str) -> str:
    text = "\0".join((grant.user.lower(), grant.client_ip, str(grant.client_port), str(grant.ttl), str(stamp), nonce))
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


def sign(secret: str, grant: Grant, now: float | None = None) -> str:
    """The token for ``grant``: ``dovetail-proxy:v1:<unix time>:<nonce>:<hex HMAC>``."""
    stamp = int(time.time() if now is None else now)
    nonce = secrets.token_hex(8)
    return f"{PREFIX}{stamp}:{nonce}:{_mac(secret, grant, stamp, nonce)}"


def is_token(password: str) -> bool:
    return password.startswith(PREFIX)


def check(secret: str, grant: Grant, token: str, now: float | None = None,
          replays: Replays | None = None) -> str | None:
    """None when ``token`` proves ``grant`` under ``secret`` (and, with ``replays``, was not used before: a
    blocking call then); else why not, in words for the log and the peer."""
    if not secret:
        return "this node has no cluster.secret: proxied logins are off"
    try:
        stamp_text, nonce, mac = token[len(PREFIX):].split(":")
        stamp = int(stamp_text)
    except ValueError:
        return "malformed proxy token"
    if not hmac.compare_digest(mac, _mac(secret, grant, stamp, nonce)):
        return "proxy signature mismatch: cluster.secret differs between the nodes"
    if abs((time.time() if now is None else now) - stamp) > FRESH:
        return "stale proxy token: the nodes' clocks differ by more than a minute"
    if replays is not None and not replays.first_use(mac, stamp + FRESH):
        return "proxy token used before: a replayed login"
    return None
