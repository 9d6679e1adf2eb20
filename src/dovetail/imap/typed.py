"""Commands as typed objects, read off the token tree before they run (as pymap does).

:mod:`dovetail.imap.tokens` turns a command line into a generic token tree; for the commands listed
in :data:`PARSERS` this module turns that tree into a frozen dataclass with the command's arguments in
their own types (a :class:`~dovetail.imap.sequence.SequenceSet`, a :class:`~dovetail.storage.api.StoreMode`,
canonical flags), raising :class:`~dovetail.imap.tokens.ParseError` (``BAD``) for anything the grammar
refuses. The handlers then only decide against the selected mailbox and the storage, and the parsing
can be tested (and fuzzed) without a session or a socket.

Mailbox names stay the bytes the client sent: how they decode (modified UTF-7, or UTF-8 once
``UTF8=ACCEPT`` is enabled) is session state, applied when the command runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from dovetail.imap.sequence import SequenceSet
from dovetail.imap.tokens import Atom, Command, ListToken, ParseError, Token, astring, number
from dovetail.storage.api import SYSTEM_FLAGS, StoreMode

_FLAG_NAMES = {f.upper(): f for f in SYSTEM_FLAGS}
_STORE_MODES = {"FLAGS": StoreMode.REPLACE, "+FLAGS": StoreMode.ADD, "-FLAGS": StoreMode.REMOVE}


@dataclass(frozen=True)
class StoreCommand:
    """``[UID] STORE set [(UNCHANGEDSINCE n)] [+|-]FLAGS[.SILENT] flags``."""

    tag: str
    uid: bool
    sequence: SequenceSet
    mode: StoreMode
    silent: bool
    flags: tuple[str, ...]
    unchangedsince: int | None = None
    name: str = "STORE"


@dataclass(frozen=True)
class CopyCommand:
    """``[UID] COPY|MOVE set mailbox``."""

    tag: str
    uid: bool
    move: bool
    sequence: SequenceSet
    mailbox: bytes

    @property
    def name(self) -> str:
        return "MOVE" if self.move else "COPY"


@dataclass(frozen=True)
class ExpungeCommand:
    """``EXPUNGE``, or ``UID EXPUNGE set`` (UIDPLUS): only the named messages."""

    tag: str
    uid: bool
    sequence: SequenceSet | None = None
    name: str = "EXPUNGE"


TypedCommand = StoreCommand | CopyCommand | ExpungeCommand


def sequence_set(tok: Token) -> SequenceSet:
    if not isinstance(tok, Atom):
        raise ParseError("Expected a sequence set")
    return SequenceSet.parse(tok.value)


def parse_flags(tokens: tuple[Token, ...] | list[Token]) -> list[str]:
    """Flags of APPEND/STORE: system flags canonicalised, keywords as atoms; ``\\Recent`` refused."""
    out = []
    for tok in tokens:
        if not isinstance(tok, Atom):
            raise ParseError("Flags must be atoms")
        value = tok.value
        if value.startswith("\\"):
            canon = _FLAG_NAMES.get(value.upper())
            if canon is None:
                if value.upper() == "\\RECENT":
                    raise ParseError("\\Recent can't be set")
                raise ParseError(f"Invalid system flag {value[:40]}")
            out.append(canon)
        else:
            if any(c in value for c in "[]%*") or len(value) > 250:
                raise ParseError(f"Invalid keyword {value[:40]}")
            out.append(value)
    return out


def parse_store(cmd: Command) -> StoreCommand:
    args = list(cmd.args)
    if len(args) < 3:
        raise ParseError("STORE needs a sequence set, an item and flags")
    seq = sequence_set(args.pop(0))
    unchangedsince = None
    first = args[0]
    if isinstance(first, ListToken):
        args.pop(0)
        mods = list(first.items)
        if len(mods) != 2 or not isinstance(mods[0], Atom) or mods[0].value.upper() != "UNCHANGEDSINCE":
            raise ParseError("Invalid STORE modifier")
        unchangedsince = number(mods[1], bits=63)
    item_tok = args.pop(0) if args else None
    if not isinstance(item_tok, Atom):
        raise ParseError("Invalid STORE item")
    item = item_tok.value.upper()
    silent = item.endswith(".SILENT")
    mode = _STORE_MODES.get(item[:-7] if silent else item)
    if mode is None:
        raise ParseError("Invalid STORE item")
    only = args[0] if len(args) == 1 else None
    flags = parse_flags(only.items if isinstance(only, ListToken) else args)
    return StoreCommand(cmd.tag, cmd.uid, seq, mode, silent, tuple(flags), unchangedsince)


def parse_copy(cmd: Command) -> CopyCommand:
    if len(cmd.args) != 2:
        raise ParseError(f"{cmd.name} needs a sequence set and a mailbox")
    return CopyCommand(cmd.tag, cmd.uid, cmd.name == "MOVE", sequence_set(cmd.args[0]), astring(cmd.args[1]))


def parse_expunge(cmd: Command) -> ExpungeCommand:
    if cmd.uid:
        if len(cmd.args) != 1:
            raise ParseError("UID EXPUNGE needs a UID set")
        return ExpungeCommand(cmd.tag, True, sequence_set(cmd.args[0]))
    if cmd.args:
        raise ParseError("EXPUNGE takes no arguments")
    return ExpungeCommand(cmd.tag, False)


PARSERS: dict[str, Callable[[Command], TypedCommand]] = {
    "STORE": parse_store,
    "COPY": parse_copy,
    "MOVE": parse_copy,
    "EXPUNGE": parse_expunge,
}


def typed(cmd: Command) -> TypedCommand | Command:
    """``cmd`` as its typed object; the token tree itself for a command not typed yet."""
    parse = PARSERS.get(cmd.name)
    return cmd if parse is None else parse(cmd)
