"""What a command handler may use of its connection: the ``CommandSession`` protocol.

The handlers depend on this, not on :class:`dovetail.imap.session.Session`, so the dependency goes one
way: the session imports the handler table and satisfies the protocol, and no command module imports
the session.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol, runtime_checkable

from dovetail.imap.limits import Limits
from dovetail.imap.state import Selected, State
from dovetail.imap.tokens import Command
from dovetail.imap.typed import TypedCommand
from dovetail.storage.api import Changes, MailStorage

Result = tuple[str | None, str]
"""``(response code, text)`` of the tagged OK."""


@runtime_checkable
class CommandSession(Protocol):
    """One connection as its commands see it: state, the open storage and selection, output."""

    state: State
    storage: MailStorage | None
    selected: Selected | None
    enabled: set[str]  # ENABLEd extensions, upper case; CONDSTORE also once a command uses it
    limits: Limits
    notify: Any  # NOTIFY's NotifySpec, or None

    @property
    def quota_bytes(self) -> int:
        """The logged-in account's quota in bytes (0: none)."""
        ...

    @property
    def utf8(self) -> bool: ...

    @property
    def rev2(self) -> bool: ...

    @property
    def condstore(self) -> bool: ...

    @property
    def qresync(self) -> bool: ...

    def write(self, line: str | bytes) -> None:
        """Queue one response line (without CRLF)."""
        ...

    def flags_out(self, flags: frozenset[str], recent: bool) -> bytes:
        """A FETCH FLAGS list, formatted once per flag set; callable from a worker thread."""
        ...

    def enable_condstore(self) -> None:
        """Turn CONDSTORE on from a command that implies it (reports HIGHESTMODSEQ the first time)."""
        ...

    def note_keywords(self, flags: Iterable[str]) -> None:
        """Remember keywords the client has not been told of yet."""
        ...

    def flags_response(self, *, reset: bool = False) -> None:
        """Write ``* FLAGS`` and ``PERMANENTFLAGS`` (``reset``: for a newly selected mailbox)."""
        ...

    def note_refreshed(self, changes: Changes) -> None:
        """A command found, without a thread hop, that nothing changed since the last refresh
        (:meth:`~dovetail.storage.api.Mailbox.memory_reads`): the updates after it report ``changes``
        instead of refreshing again."""
        ...

    def announce_keywords(self) -> None:
        """Write the FLAGS response owed for keywords about to appear, if any."""
        ...

    async def unselect(self) -> None:
        """Close the selected mailbox, if any, and go back to the authenticated state."""
        ...

    def detach_selected(self) -> Any:
        """Leave the selected mailbox, if any, and hand back its view for the caller to close."""
        ...

    async def work_then_refresh(self, cmd: Command | TypedCommand, work: Callable[[], Any]) -> Any:
        """Run ``work`` in a worker thread with the selected mailbox's refresh right after it (one
        thread hop); :meth:`updates` reports what that refresh found."""
        ...

    async def updates(self, cmd: Command | TypedCommand | None = None) -> None:
        """Report what changed in the selected mailbox (new mail, flags, expunges if ``cmd`` allows)."""
        ...


# A handler takes the command's typed object (see dovetail.imap.typed) or, not typed yet, its token tree.
Handler = Callable[[CommandSession, Any], Awaitable[Result | None]]
"""A command: returns ``(code, text)`` for the tagged OK, or None when it answered itself; raises
``CommandError``/``ParseError``/``StorageError`` for the session to turn into a response."""

CommandTable = dict[str, tuple[Handler, frozenset[State]]]
"""Command name → handler and the states it is allowed in."""
