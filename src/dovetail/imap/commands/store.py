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
        condstore = s.condstore
        # .SILENT sends nothing, unless CONDSTORE's UNCHANGEDSINCE owes the new MODSEQs (RFC 7162 §3.2).
        report = res.changed if not silent or (condstore and unchangedsince is not None) else []
        lines = []
        seq_of, flags_out, with_uid = mb.seq_of, s.flags_out, cmd.uid
        for st in report:
            seq = seq_of(st.uid)
            if seq is None:
                continue
            items = [b"UID %d" % st.uid] if with_uid else []
            if not silent:
                items.append(b"FLAGS " + flags_out(st.flags, st.recent))
            if condstore:
                items.append(b"MODSEQ (%d)" % st.modseq)
            lines.append(b"* %d FETCH (%s)" % (seq, b" ".join(items)))
        modified = res.modified
        if not cmd.uid:
            modified = [q for q in (mb.seq_of(u) for u in modified) if q is not None]
        return lines, modified

    if mode is not StoreMode.REMOVE:
        s.note_keywords(flags)  # a keyword set now is shown by FLAGS even when .SILENT hides the FETCH
    lines, modified = await s.work_then_refresh(cmd, work)
    s.announce_keywords()
    if lines:
        s.write(b"\r\n".join(lines))
    if modified:
        return f"MODIFIED {format_set(modified)}", "Conditional STORE failed"
    return None, "Store completed."


COMMANDS: CommandTable = {"STORE": (cmd_store, SEL)}  # takes its typed command
