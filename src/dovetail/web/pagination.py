"""Cursor pagination over sorted listings: ``limit`` items after an opaque ``cursor``.

The cursor is the sort key of the last item returned, base64url-encoded, so a page stays correct
when items are added or removed between requests (unlike an offset).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from fastapi import Query
from pydantic import BaseModel

from ..httpapi.problems import Problem

T = TypeVar("T")

MAX_LIMIT = 500


class PageParams(BaseModel):
    limit: int = 100
    cursor: str | None = None


def page_params(limit: int = Query(100, ge=1, le=MAX_LIMIT, description="items per page"),
                cursor: str | None = Query(None, max_length=1024,
                                           description="`next_cursor` of the previous page")) -> PageParams:
    return PageParams(limit=limit, cursor=cursor)


def encode_cursor(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        return base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise Problem(400, "Bad Request", "invalid cursor") from None


def paginate(items: Sequence[T], key: Callable[[T], str], params: PageParams) -> dict[str, Any]:
    """``{"items": [...], "next_cursor": str | None}`` for one page of ``items`` sorted by ``key``."""
    ordered = sorted(items, key=key)
    if params.cursor:
        after = decode_cursor(params.cursor)
        ordered = [item for item in ordered if key(item) > after]
    page = ordered[: params.limit]
    more = len(ordered) > params.limit
    return {"items": list(page), "next_cursor": encode_cursor(key(page[-1])) if more and page else None}
