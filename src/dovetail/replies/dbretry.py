"""Retry a short write transaction that lost a race: SQLite's "database is locked" and unique-key clashes.

Under WAL, a transaction that reads and then writes fails at once with SQLITE_BUSY when another
connection committed in between (the busy timeout does not apply to that upgrade); running it
again is the documented remedy. A unique-key clash means another worker stored the same thing
first, and running again finds it stored.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import IntegrityError, OperationalError

T = TypeVar("T")
ATTEMPTS = 8


def retryable(exc: Exception) -> bool:
    if isinstance(exc, IntegrityError):
        return True
    return isinstance(exc, OperationalError) and ("locked" in str(exc) or "deadlock" in str(exc).lower())


def retry(fn: Callable[[], T], attempts: int = ATTEMPTS) -> T:
    """Run ``fn``; on a retryable failure run it again after a short, growing pause (blocking)."""
    for attempt in range(attempts):
        try:
            return fn()
        except (IntegrityError, OperationalError) as exc:
            if attempt == attempts - 1 or not retryable(exc):
                raise
            time.sleep(0.01 * 2 ** attempt)
    raise AssertionError("unreachable")
