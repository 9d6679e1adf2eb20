"""Per-tenant SMTP credentials for submission (``dovetail smtp-credentials add TENANT``).

The secret is generated here, shown once, and stored as an Argon2id hash like mailbox passwords.
A user name is ``<tenant>-<random>`` so it never collides with a mailbox address (those hold '@').
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from dovetail.directory import lookups
from dovetail.directory.addresses import AddressError, check_tenant_name
from dovetail.mailauth.passwords import hash_password, verify_async
from dovetail.outbound.schema import smtp_credentials


class CredentialError(ValueError):
    """A refused credential operation."""


@dataclass(frozen=True)
class NewCredential:
    tenant: str
    username: str
    secret: str


class SmtpCredentials:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(self, tenant: str, description: str = "") -> NewCredential:
        try:
            name = check_tenant_name(tenant)
        except AddressError as exc:
            raise CredentialError(str(exc)) from None
        username = f"{name}-{secrets.token_hex(6)}"
        secret = secrets.token_urlsafe(24)
        with self.engine.begin() as conn:
            tid = lookups.tenant_id(conn, name)
            if tid is None:
                raise CredentialError(f"no such tenant {tenant!r}")
            conn.execute(smtp_credentials.insert().values(tenant_id=tid, username=username,
                                                          password_hash=hash_password(secret),
                                                          description=description[:200]))
        return NewCredential(name, username, secret)

    def list(self, tenant: str | None = None) -> list[dict[str, object]]:
        tenant_name = lookups.tenant_name_of(smtp_credentials.c.tenant_id)
        query = (sa.select(smtp_credentials.c.username, tenant_name.label("tenant"),
                           smtp_credentials.c.description, smtp_credentials.c.created_at)
                 .order_by(tenant_name, smtp_credentials.c.id))
        if tenant:
            query = query.where(lookups.tenant_named(smtp_credentials.c.tenant_id, tenant))
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def remove(self, username: str, tenant: str | None = None) -> None:
        """Revoke ``username``; with ``tenant``, only when it is that tenant's (else it is not found)."""
        query = smtp_credentials.delete().where(smtp_credentials.c.username == username)
        if tenant is not None:
            query = query.where(lookups.tenant_named(smtp_credentials.c.tenant_id, tenant))
        with self.engine.begin() as conn:
            if conn.execute(query).rowcount == 0:
                raise CredentialError(f"no such SMTP credential {username!r}")

    def tenant_of(self, username: str) -> str | None:
        """The enabled tenant owning an SMTP credential (for a session already authenticated), or None."""
        with self.engine.connect() as conn:
            found = conn.execute(sa.select(lookups.tenant_name_of(smtp_credentials.c.tenant_id).label("name"),
                                           lookups.tenant_enabled_of(smtp_credentials.c.tenant_id).label("enabled"))
                                 .where(smtp_credentials.c.username == username)).first()
        return found.name if found is not None and found.enabled else None

    async def verify(self, username: str, secret: str) -> str | None:
        """The tenant owning ``username`` when ``secret`` is right (and the tenant enabled), else None."""
        if len(username) > 128 or len(secret) > 1024:
            return None
        def row():  # noqa: ANN202
            with self.engine.connect() as conn:
                tid = smtp_credentials.c.tenant_id
                return conn.execute(sa.select(smtp_credentials.c.password_hash,
                                              lookups.tenant_name_of(tid).label("name"),
                                              lookups.tenant_enabled_of(tid).label("enabled"))
                                    .where(smtp_credentials.c.username == username)).first()

        found = await asyncio.to_thread(row)
        if found is None or not found.enabled:
            return None
        return found.name if await verify_async(found.password_hash, secret) else None
