"""STORE and UID STORE: FLAGS, +FLAGS, -FLAGS (.SILENT), with CONDSTORE's UNCHANGEDSINCE (read by
:func:`dovetail.imap.typed.parse_store`)."""

from __future__ import annotations

from dovetail.imap.commands.arguments import resolve_set
from dovetail.imap.commands.context import CommandSession, CommandTable, Result
from dovetail.imap.sequence import format_set
from dovetail.imap.state import SEL, CommandError
from dovetail.imap.typed import StoreCommand
from dovetail.storage.api import StoreMode


async def cmd_store(s: CommandSession, cmd: StoreCommand) -> Result:
    sel = s.selected
    assert sel is not None
    uids = resolve_set(s, cmd.sequence, cmd.uid)
    mode, flags, silent, unchangedsince = cmd.mode, list(cmd.flags), cmd.silent, cmd.unchangedsince
    if unchangedsince is not None:
        s.enable_condstore()
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
    lines, modified = await s.work_then_refresh(cmd, work)
    s.announce_keywords()
    for line in lines:
        s.write(line)
    if modified:
        return f"MODIFIED {format_set(modified)}", "Conditional STORE failed"
    return None, "Store completed."


COMMANDS: CommandTable = {"STORE": (cmd_store, SEL)}  # takes its typed command
