"""FastAPI dependencies every router shares: who is calling and which tenants they may see.

A caller is identified by an API token (``Authorization: Bearer dvt_...``) or by a UI session
cookie. The result is a :class:`Scope`: admin (all tenants) or one tenant. Routers of other
areas (the replies engine's ``APIRouter``) take ``scope: Scope = Depends(get_scope)`` and filter
with :meth:`Scope.where` / check with :meth:`Scope.require`; a tenant caller asking for another
tenant's object gets 404, never a hint that it exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Path, Request
from sqlalchemy.engine import Engine

from ..directory.addresses import normalize_tenant
from .problems import Problem

ROW_ID_MAX = 2**31 - 1  # keys are INTEGER columns: 32 bits on PostgreSQL

RowId = Annotated[int, Path(ge=1, le=ROW_ID_MAX)]
"""A database key in a path: out of range gets 422 instead of reaching the database driver."""

MAX_FORM_FIELDS = 50


async def posted_form(request: Request) -> dict[str, str]:
    """The posted form's fields, read on the event loop (no database here)."""
    form = await request.form(max_fields=MAX_FORM_FIELDS, max_files=0)
    return {k: str(v) for k, v in form.items()}


Posted = Annotated[dict[str, str], Depends(posted_form)]
"""A form route's fields. Form routes are plain ``def``, run in the threadpool, so that their session
lookups, password checks and database work never stall the event loop; only reading the body is async."""


@dataclass(frozen=True)
class Scope:
    """What the caller may see: ``kind`` is ``admin`` (all tenants) or ``tenant`` (one tenant)."""

    kind: str
    tenant_id: int | None = None
    tenant: str | None = None
    principal: str = ""
    via: str = "token"  # token | session

    @property
    def is_admin(self) -> bool:
        return self.kind == "admin"

    def allows(self, tenant: int | str | None) -> bool:
        """True when an object of ``tenant`` (id or name) is visible to this caller."""
        if self.is_admin:
            return True
        if tenant is None:
            return False
        if isinstance(tenant, int):
            return tenant == self.tenant_id
        return normalize_tenant(tenant) == self.tenant

    def require(self, tenant: int | str | None, what: str = "object") -> None:
        """Raise 404 (not 403: existence is not disclosed) when ``tenant`` is not visible."""
        if not self.allows(tenant):
            raise Problem(404, "Not Found", f"no such {what}")

    def require_admin(self) -> None:
        if not self.is_admin:
            raise Problem(403, "Forbidden", "this action needs an admin token or admin user")

    def where(self, tenant_id_column: Any) -> Any:
        """A SQLAlchemy filter restricting a query to the caller's tenant (``true()`` for admins)."""
        import sqlalchemy as sa

        if self.is_admin:
            return sa.true()
        return tenant_id_column == self.tenant_id

    def tenant_filter(self) -> str | None:
        """The tenant name to filter directory listings by (None: all)."""
        return None if self.is_admin else self.tenant


def get_engine(request: Request) -> Engine:
    """The application's database engine."""
    return request.app.state.engine


def get_scope(request: Request) -> Scope:
    """The caller's scope from its bearer token or session; 401 problem when there is none.

    A request with a session cookie that changes state must carry the session's CSRF token
    (header ``X-CSRF-Token`` or form field ``csrf``); bearer-token requests need none.
    """
    cached = getattr(request.state, "scope", None)
    if cached is not None:
        return cached
    scope = request.app.state.auth.authenticate(request)
    request.state.scope = scope
    return scope


def get_admin_scope(request: Request) -> Scope:
    """Like :func:`get_scope` but refuses tenant callers with 403."""
    scope = get_scope(request)
    scope.require_admin()
    return scope
