"""The id of the row a single-row INSERT made, as an ``int``.

SQLAlchemy types ``CursorResult.inserted_primary_key`` as optional because it is empty for statements
that are not a single-row INSERT; for ours it never is, and this says so once instead of at every insert.
Kept apart from ``db`` so that code which only writes rows does not import Alembic.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import CursorResult


def inserted_id(result: CursorResult[Any]) -> int:
    """The integer primary key of the row ``result``'s INSERT created."""
    key = result.inserted_primary_key
    if key is None or key[0] is None:
        raise ValueError("the statement was not a single-row INSERT with an integer primary key")
    return int(key[0])
