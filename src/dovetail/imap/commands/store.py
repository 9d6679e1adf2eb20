"""STORE and UID STORE: FLAGS, +FLAGS, -FLAGS (.SILENT), with CONDSTORE's UNCHANGEDSINCE."""

from __future__ import annotations

import asyncio
from typing import Any

from dovetail.imap.commands.arguments import parse_flags, resolve
from dovetail.imap.commands.context import CommandSession, CommandTable, Result
from dovetail.imap.sequence import format_set
from dovetail.imap.state import SEL, CommandError
from dovetail.imap.tokens import Atom, ListToken, ParseError, number
from dovetail.storage.api import StoreMode


async def cmd_store(s: CommandSession, cmd: Any) -> Result:
    sel = s.selected
    assert sel is not None
    args = list(cmd.args)
    if len(args) < 3:
        raise ParseError("STORE needs a sequence set, an item and flags")
    uids = resolve(s, args.pop(0), cmd.uid)
    unchangedsince = None
    if isinstance(args[0], ListToken):
        mods = list(args.pop(0).items)
        if len(mods) != 2 or not isinstance(mods[0], Atom) or mods[0].value.upper() != "UNCHANGEDSINCE":
            raise ParseError("Invalid STORE modifier")
        unchangedsince = number(mods[1], bits=63)
        s.enable_condstore()
    if not args or not isinstance(args[0], Atom):
        raise ParseError("Invalid STORE item")
    item = args.pop(0).value.upper()
    silent = item.endswith(".SILENT")
    base = item[:-7] if silent else item
    mode = {"FLAGS": StoreMode.REPLACE, "+FLAGS": StoreMode.ADD, "-FLAGS": StoreMode.REMOVE}.get(base)
    if mode is None:
        raise ParseError("Invalid STORE item")
    if len(args) == 1 and isinstance(args[0], ListToken):
        flags = parse_flags(args[0].items)
    else:
        flags = parse_flags(args)
    if sel.readonly:
        raise CommandError("Mailbox is read-only.", "READ-ONLY")
    mb = sel.mailbox

    def work() -> tuple[list[bytes], list[int]]:
        res = mb.store_flags(uids, mode, flags, unchangedsince)
        lines = []
        for st in res.changed:
            if silent and not (s.condstore and unchangedsince is not None):
                continue
            seq = mb.seq_of(st.uid)
            if seq is None:
                continue
            items = [b"FLAGS " + s.flags_out(st.flags, st.recent)]
            if cmd.uid:
                items.insert(0, b"UID %d" % st.uid)
            if s.condstore:
                items.append(b"MODSEQ (%d)" % st.modseq)
            if silent:
                items = [i for i in items if not i.startswith(b"FLAGS")]
            lines.append(b"* %d FETCH (" % seq + b" ".join(items) + b")")
        modified = res.modified
        if not cmd.uid:
            modified = [q for q in (mb.seq_of(u) for u in modified) if q is not None]
        return lines, modified

    if mode is not StoreMode.REMOVE:
        s.note_keywords(flags)  # a keyword set now is shown by FLAGS even when .SILENT hides the FETCH
    lines, modified = await asyncio.to_thread(work)
    s.announce_keywords()
    for line in lines:
        s.write(line)
    if modified:
        return f"MODIFIED {format_set(modified)}", "Conditional STORE failed"
    return None, "Store completed."


COMMANDS: CommandTable = {"STORE": (cmd_store, SEL)}
