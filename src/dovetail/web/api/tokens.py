"""API tokens over the REST API: admins manage every token, tenant callers their tenant's tokens."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Response

from ...httpapi.deps import RowId, Scope, get_scope
from ...httpapi.problems import Problem
from .. import auth
from ..context import WebContext, get_ctx
from ..pagination import PageParams, page_params, paginate
from . import models as m

router = APIRouter(tags=["tokens"])


@router.get("/tokens", response_model=m.TokenPage)
def list_tokens(page: PageParams = Depends(page_params), scope: Scope = Depends(get_scope),
                ctx: WebContext = Depends(get_ctx)) -> dict[str, Any]:
    rows = auth.token_list(ctx.engine, None if scope.is_admin else scope.tenant_id)
    return paginate(rows, lambda r: f"{r['id']:012d}", page)


@router.post("/tokens", response_model=m.TokenCreated, status_code=201)
def create_token(body: m.TokenIn, scope: Scope = Depends(get_scope),
                 ctx: WebContext = Depends(get_ctx)) -> dict[str, Any]:
    if body.scope == "admin":
        scope.require_admin()
    tenant = body.tenant or (scope.tenant if body.scope == "tenant" else None)
    if body.scope == "tenant" and not scope.allows(tenant):
        raise Problem(404, "Not Found", "no such tenant")
    try:
        made = auth.token_add(ctx.engine, body.scope, tenant if body.scope == "tenant" else None, body.name)
    except auth.AuthError as exc:
        raise Problem(404 if "no such tenant" in str(exc) else 422, detail=str(exc)) from None
    row = next(r for r in auth.token_list(ctx.engine) if r["id"] == made.id)
    return {**row, "token": made.token}


@router.delete("/tokens/{token_id}", status_code=204)
def revoke_token(token_id: RowId, scope: Scope = Depends(get_scope), ctx: WebContext = Depends(get_ctx)) -> Response:
    row = auth.token_get(ctx.engine, token_id)
    if row is None or not (scope.is_admin or (row["scope"] == "tenant" and row["tenant_id"] == scope.tenant_id)):
        raise Problem(404, "Not Found", "no such token")
    if not auth.token_revoke(ctx.engine, token_id):
        raise Problem(409, "Conflict", "the token is revoked already")
    return Response(status_code=204)
