"""Admin users, API tokens, UI sessions and login throttling.

API tokens are 256-bit random strings (``dvt_`` + 43 url-safe characters); a token that random
needs no slow hash, so it is stored as SHA-256 and found by that digest in one indexed lookup.
Only its first characters (``prefix``) are kept in clear, to recognise it in listings.
User passwords are Argon2id through ``dovetail.mailauth.passwords``.

Sessions live server-side (``web_sessions``, keyed by the SHA-256 of the cookie value) so that
logout and revocation are immediate; each holds its CSRF token.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from fastapi import Request
from sqlalchemy.engine import Engine

from ..dbrows import inserted_id
from ..directory import lookups
from ..directory.addresses import AddressError, normalize_address, normalize_tenant
from ..httpapi.deps import Scope
from ..httpapi.problems import Problem
from ..mailauth.passwords import hash_password, verify_password
from .schema import api_tokens, web_sessions, web_users

TOKEN_PREFIX = "dvt_"
SESSION_COOKIE = "dovetail_session"
SESSION_LIFETIME = dt.timedelta(hours=12)
ROLES = ("admin", "tenant_admin")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# A fixed hash to verify against when the user does not exist, so timing does not tell.
_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))


class AuthError(ValueError):
    """A refused user or token operation (unknown tenant, duplicate email, bad role)."""


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _tenant_id(conn: sa.Connection, tenant: str | None) -> int | None:
    if not tenant:
        return None
    tid = lookups.tenant_id(conn, tenant)
    if tid is None:
        raise AuthError(f"no such tenant {tenant!r}")
    return int(tid)


# --- users -------------------------------------------------------------------------------------

def user_add(engine: Engine, email: str, password: str, role: str = "admin", tenant: str | None = None) -> int:
    """Create an admin user (``admin``) or a tenant's admin (``tenant_admin`` of ``tenant``)."""
    try:
        addr = normalize_address(email)
    except AddressError as exc:
        raise AuthError(str(exc)) from None
    if role not in ROLES:
        raise AuthError(f"role must be one of {', '.join(ROLES)}")
    if role == "tenant_admin" and not tenant:
        raise AuthError("a tenant_admin needs a tenant")
    if role == "admin" and tenant:
        raise AuthError("an admin sees all tenants; do not name one")
    if len(password) < 8:
        raise AuthError("password must have at least 8 characters")
    with engine.begin() as conn:
        tid = _tenant_id(conn, tenant)
        if conn.execute(sa.select(web_users.c.id).where(web_users.c.email == addr)).first():
            raise AuthError(f"user {addr} already exists")
        result = conn.execute(web_users.insert().values(email=addr, password_hash=hash_password(password),
                                                        role=role, tenant_id=tid))
        return inserted_id(result)


def user_list(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(web_users.c.id, web_users.c.email, web_users.c.role,
                                      lookups.tenant_name_of(web_users.c.tenant_id).label("tenant"),
                                      web_users.c.enabled, web_users.c.last_login_at)
                            .order_by(web_users.c.email))
        return [dict(r._mapping) for r in rows]


def check_login(engine: Engine, email: str, password: str) -> dict[str, Any] | None:
    """The user row when ``email``/``password`` are right and the user is enabled, else None."""
    try:
        addr = normalize_address(email)
    except AddressError:
        addr = ""
    with engine.connect() as conn:
        row = conn.execute(sa.select(web_users, lookups.tenant_name_of(web_users.c.tenant_id).label("tenant"))
                           .where(web_users.c.email == addr)).first() if addr else None
    if row is None:
        verify_password(_DUMMY_HASH, password)
        return None
    user = dict(row._mapping)
    if not verify_password(user["password_hash"], password) or not user["enabled"]:
        return None
    return user


# --- tokens ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class NewToken:
    id: int
    token: str  # shown once
    prefix: str
    scope: str
    tenant: str | None


def token_add(engine: Engine, scope: str = "admin", tenant: str | None = None, name: str = "") -> NewToken:
    """Create an API token; the clear token is returned once and never stored."""
    if scope not in ("admin", "tenant"):
        raise AuthError("scope must be admin or tenant")
    if scope == "tenant" and not tenant:
        raise AuthError("a tenant token needs a tenant")
    if scope == "admin" and tenant:
        raise AuthError("an admin token covers all tenants; do not name one")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    prefix = token[:12]
    with engine.begin() as conn:
        tid = _tenant_id(conn, tenant)
        result = conn.execute(api_tokens.insert().values(name=name[:100], prefix=prefix, token_hash=_digest(token),
                                                         scope=scope, tenant_id=tid))
        tok_id = inserted_id(result)
    return NewToken(tok_id, token, prefix, scope, normalize_tenant(tenant) if tenant else None)


def token_list(engine: Engine, tenant_id: int | None = None, include_revoked: bool = True) -> list[dict[str, Any]]:
    query = (sa.select(api_tokens.c.id, api_tokens.c.name, api_tokens.c.prefix, api_tokens.c.scope,
                       lookups.tenant_name_of(api_tokens.c.tenant_id).label("tenant"), api_tokens.c.created_at,
                       api_tokens.c.last_used_at, api_tokens.c.revoked_at)
             .order_by(api_tokens.c.id))
    if tenant_id is not None:
        query = query.where(api_tokens.c.tenant_id == tenant_id)
    if not include_revoked:
        query = query.where(api_tokens.c.revoked_at.is_(None))
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def token_get(engine: Engine, token_id: int) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(sa.select(api_tokens.c.id, api_tokens.c.tenant_id, api_tokens.c.scope,
                                     api_tokens.c.revoked_at).where(api_tokens.c.id == token_id)).first()
    return dict(row._mapping) if row else None


def token_revoke(engine: Engine, token_id: int) -> bool:
    """Revoke a token; False when there is no such token or it was revoked already."""
    with engine.begin() as conn:
        result = conn.execute(api_tokens.update()
                              .where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
                              .values(revoked_at=_utcnow()))
        return result.rowcount > 0


# --- login throttling --------------------------------------------------------------------------

class Throttle:
    """Failed logins per client address and per account in a sliding window.

    Past ``limit`` failures within ``window`` seconds further attempts get 429 until the oldest
    failure leaves the window; a success clears the account's record.
    """

    def __init__(self, limit: int = 5, window: float = 300.0, max_keys: int = 50_000) -> None:
        self.limit, self.window, self.max_keys = limit, window, max_keys
        self._fails: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def _prune(self, key: str, now: float) -> deque[float]:
        q = self._fails[key]
        while q and now - q[0] > self.window:
            q.popleft()
        return q

    def retry_after(self, *keys: str) -> int:
        """Seconds to wait before another attempt is allowed (0: go ahead)."""
        now = time.monotonic()
        with self._lock:
            wait = 0.0
            for key in keys:
                q = self._prune(key, now)
                if len(q) >= self.limit:
                    wait = max(wait, self.window - (now - q[0]))
            return int(wait) + 1 if wait > 0 else 0

    def failed(self, *keys: str) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._fails) > self.max_keys:
                self._fails.clear()
            for key in keys:
                self._prune(key, now).append(now)

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._fails.pop(key, None)


# --- request authentication --------------------------------------------------------------------

class Auth:
    """Turns a request into a :class:`Scope` (bearer token or session cookie) and runs sessions."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.throttle = Throttle()
        self._last_used: dict[int, float] = {}

    def authenticate(self, request: Request) -> Scope:
        header = request.headers.get("authorization", "")
        if header:
            scheme, _, credentials = header.partition(" ")
            if scheme.lower() != "bearer" or not credentials.strip():
                raise _unauthorized("use Authorization: Bearer <token>")
            return self.token_scope(credentials.strip())
        session = self.session(request)
        if session is None:
            raise _unauthorized("authentication required: a bearer token or a session")
        if request.method not in SAFE_METHODS:
            self.check_csrf(request, session)
        return session["scope"]

    def token_scope(self, token: str) -> Scope:
        if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            raise _unauthorized("invalid token")
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(api_tokens.c.id, api_tokens.c.scope, api_tokens.c.tenant_id,
                                         api_tokens.c.prefix, api_tokens.c.revoked_at,
                                         lookups.tenant_name_of(api_tokens.c.tenant_id).label("tenant"),
                                         lookups.tenant_enabled_of(api_tokens.c.tenant_id).label("enabled"))
                               .where(api_tokens.c.token_hash == _digest(token))).first()
        if row is None or row.revoked_at is not None:
            raise _unauthorized("invalid or revoked token")
        if row.scope == "tenant" and (row.tenant_id is None or not row.enabled):
            raise _unauthorized("the token's tenant is disabled")
        self._touch(row.id)
        if row.scope == "admin":
            return Scope("admin", principal=f"token:{row.prefix}", via="token")
        return Scope("tenant", tenant_id=row.tenant_id, tenant=row.tenant, principal=f"token:{row.prefix}",
                     via="token")

    def _touch(self, token_id: int) -> None:
        """Record last use, at most once a minute per token (a write per request would be costly)."""
        now = time.monotonic()
        if now - self._last_used.get(token_id, -1e9) < 60:
            return
        self._last_used[token_id] = now
        with self.engine.begin() as conn:
            conn.execute(api_tokens.update().where(api_tokens.c.id == token_id).values(last_used_at=_utcnow()))

    # --- sessions ------------------------------------------------------------------------------

    def create_session(self, user: dict[str, Any]) -> tuple[str, str]:
        """A new session for ``user``: (cookie value, CSRF token)."""
        cookie, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        now = _utcnow()
        with self.engine.begin() as conn:
            conn.execute(web_sessions.delete().where(web_sessions.c.expires_at < now))
            conn.execute(web_sessions.insert().values(id=_digest(cookie), user_id=user["id"], csrf=csrf,
                                                      expires_at=now + SESSION_LIFETIME))
            conn.execute(web_users.update().where(web_users.c.id == user["id"]).values(last_login_at=now))
        return cookie, csrf

    def session(self, request: Request) -> dict[str, Any] | None:
        """The request's live session (user, scope, csrf) or None; cached on the request."""
        if hasattr(request.state, "session"):
            return request.state.session
        found = None
        cookie = request.cookies.get(SESSION_COOKIE, "")
        if cookie and len(cookie) < 200:
            with self.engine.connect() as conn:
                row = conn.execute(sa.select(web_sessions.c.csrf, web_sessions.c.expires_at, web_users.c.id,
                                             web_users.c.email, web_users.c.role, web_users.c.tenant_id,
                                             web_users.c.enabled,
                                             lookups.tenant_name_of(web_users.c.tenant_id).label("tenant"))
                                   .select_from(web_sessions.join(web_users))
                                   .where(web_sessions.c.id == _digest(cookie))).first()
            if row is not None and row.enabled and row.expires_at > _utcnow():
                if row.role == "admin":
                    scope = Scope("admin", principal=f"user:{row.email}", via="session")
                else:
                    scope = Scope("tenant", tenant_id=row.tenant_id, tenant=row.tenant,
                                  principal=f"user:{row.email}", via="session")
                found = {"csrf": row.csrf, "email": row.email, "role": row.role, "scope": scope,
                         "tenant": row.tenant}
        request.state.session = found
        return found

    def end_session(self, request: Request) -> None:
        cookie = request.cookies.get(SESSION_COOKIE, "")
        if cookie:
            with self.engine.begin() as conn:
                conn.execute(web_sessions.delete().where(web_sessions.c.id == _digest(cookie)))

    @staticmethod
    def check_csrf(request: Request, session: dict[str, Any], form_value: str | None = None) -> None:
        sent = request.headers.get("x-csrf-token") or form_value or ""
        if not hmac.compare_digest(sent.encode(), session["csrf"].encode()):
            raise Problem(403, "Forbidden", "missing or wrong CSRF token")


def _unauthorized(detail: str) -> Problem:
    problem = Problem(401, "Unauthorized", detail)
    problem.headers = {"WWW-Authenticate": 'Bearer realm="dovetail"'}
    return problem
