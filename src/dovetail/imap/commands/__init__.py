"""The IMAP commands that work on mail storage, one module per command group, and their table.

Each handler takes a :class:`~.context.CommandSession` (what it may use of its connection) and the
parsed command, and returns ``(code, text)`` for the tagged OK or raises ``CommandError``/``ParseError``/
``StorageError``; the session turns those into responses. The session imports ``COMMANDS``; nothing
here imports the session.

- ``select``: SELECT/EXAMINE, CHECK, CLOSE, UNSELECT, EXPUNGE;
- ``mailboxes``: CREATE, DELETE, RENAME, (UN)SUBSCRIBE, LIST, LSUB, STATUS;
- ``append``: APPEND;
- ``fetch`` (with ``fetch_items``): FETCH;
- ``store``: STORE;
- ``copy_move``: COPY, MOVE;
- ``search`` (with ``search_messages``): SEARCH, SORT, THREAD;
- ``search_context``: CONTEXT=SEARCH's live searches and CANCELUPDATE;
- ``quota``: GETQUOTAROOT, GETQUOTA, SETQUOTA;
- ``notify``: NOTIFY and what it reports of other mailboxes;
- ``arguments``: mailbox names, flag lists and sequence sets, shared by the above.
"""

from __future__ import annotations

from dovetail.imap.commands import (
    append,
    copy_move,
    fetch,
    mailboxes,
    notify,
    quota,
    search,
    search_context,
    select,
    store,
)
from dovetail.imap.commands.context import CommandSession, CommandTable, Handler, Result

COMMANDS: CommandTable = {
    **select.COMMANDS,
    **mailboxes.COMMANDS,
    **append.COMMANDS,
    **fetch.COMMANDS,
    **store.COMMANDS,
    **copy_move.COMMANDS,
    **search.COMMANDS,
    **search_context.COMMANDS,
    **quota.COMMANDS,
    **notify.COMMANDS,
}
"""Command name → handler and the states it is allowed in."""

__all__ = ["COMMANDS", "CommandSession", "CommandTable", "Handler", "Result"]
