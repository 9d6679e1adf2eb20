"""Recording an unsubscribe once, whichever way it came (one-click POST or a mail to ``unsubscribe+<token>@``).

The address goes on the tenant's suppression list (reason ``unsubscribe`` unless it is there already for
another reason), and a marker row in ``processed_messages`` keyed by that suppression entry says the
unsubscribe was reported. The marker's unique key makes a repeat, or two requests racing, report nothing
more: the ``unsubscribe`` webhook fires once per suppression entry. Removing the suppression (the
operator's ``unsuppress``) and unsubscribing again makes a new entry, so that one is reported too.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from dovetail.dbrows import inserted_id

from .schema import processed_messages, suppressions

REASON = "unsubscribe"


def record_unsubscribe(conn: Connection, tid: int, address: str, source: str) -> bool:
    """Suppress ``address`` for tenant ``tid``; True when this is the first unsubscribe recorded for it
    (the caller then emits the event in the same transaction), False for a repeat or a non-address."""
    address = address.strip().lower()
    if "@" not in address or len(address) > 320:
        return False
    sid = conn.execute(sa.select(suppressions.c.id).where(suppressions.c.tenant_id == tid,
                                                         suppressions.c.address == address)).scalar()
    if sid is None:
        sid = inserted_id(conn.execute(suppressions.insert().values(tenant_id=tid, address=address, reason=REASON,
                                                                    source=source[:400])))
        # SQLite may give a new row the id of a deleted one: a marker under that id was the old entry's.
        conn.execute(processed_messages.delete().where(processed_messages.c.tenant_id == tid,
                                                       processed_messages.c.key == f"unsubscribe:{sid}"))
    try:
        with conn.begin_nested():
            conn.execute(processed_messages.insert().values(tenant_id=tid, key=f"unsubscribe:{sid}", reply_id=None))
    except IntegrityError:
        return False
    return True


def forget(conn: Connection, tid: int, address: str) -> None:
    """Drop the marker of ``address``'s suppression entry, which is about to be deleted (``unsuppress``),
    so a later entry that reuses its id (SQLite may) is reported when it comes from an unsubscribe."""
    sid = conn.execute(sa.select(suppressions.c.id).where(suppressions.c.tenant_id == tid,
                                                         suppressions.c.address == address.strip().lower())).scalar()
    if sid is not None:
        conn.execute(processed_messages.delete().where(processed_messages.c.tenant_id == tid,
                                                       processed_messages.c.key == f"unsubscribe:{sid}"))
