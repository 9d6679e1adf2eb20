"""The selected mailbox: SELECT/EXAMINE (with CONDSTORE and QRESYNC), and CHECK, CLOSE, UNSELECT and
EXPUNGE, which tidy or end a selection."""

from __future__ import annotations

import asyncio
from typing import Any

from dovetail.imap.commands.arguments import mailbox_arg, mailbox_out, resolve_set
from dovetail.imap.commands.context import CommandSession, CommandTable, Result
from dovetail.imap.commands.fetch import fetch_lines
from dovetail.imap.sequence import SequenceSet, format_set, missing_ranges
from dovetail.imap.state import AUTH, SEL, CommandError, Selected, State
from dovetail.imap.tokens import Atom, ListToken, ParseError, String, Token, number
from dovetail.imap.typed import ExpungeCommand
from dovetail.storage.api import StorageError


async def cmd_select(s: CommandSession, cmd: Any) -> Result:
    return await _select(s, cmd, readonly=cmd.name == "EXAMINE")


async def _select(s: CommandSession, cmd: Any, readonly: bool) -> Result:
    if not cmd.args or len(cmd.args) > 2:
        raise ParseError("SELECT needs a mailbox name")
    name = mailbox_arg(s, cmd.args[0])
    qresync_args: tuple[Token, ...] | None = None
    if len(cmd.args) == 2:
        params = cmd.args[1]
        if not isinstance(params, ListToken):
            raise ParseError("Invalid SELECT parameters")
        items = list(params.items)
        while items:
            key = items.pop(0)
            kname = key.value.upper() if isinstance(key, Atom) else ""
            if kname == "CONDSTORE":
                s.enabled.add("CONDSTORE")
            elif kname == "QRESYNC":
                if not s.qresync:
                    raise CommandError("QRESYNC is not enabled", status="BAD")
                given = items.pop(0) if items else None
                if not isinstance(given, ListToken):
                    raise ParseError("QRESYNC needs parameters")
                qresync_args = given.items
            else:
                raise ParseError("Unknown SELECT parameter")
    previous = s.detach_selected()  # closed in the same thread call that opens the new view
    if previous is not None and s.qresync:
        s.write("* OK [CLOSED] Previous mailbox closed.")
    assert s.storage is not None
    storage = s.storage

    def open_view() -> tuple[Any, int | None]:
        if previous is not None:
            previous.close()
        view = storage.select(name, readonly=readonly)
        return view, view.first_unseen_seq()

    mb, first_unseen = await asyncio.to_thread(open_view)
    s.selected = Selected(mb, readonly or mb.readonly)
    s.state = State.SELECTED
    s.flags_response(reset=True)
    s.write(f"* {mb.exists} EXISTS")
    if not s.rev2:
        s.write(f"* {mb.recent_count} RECENT")
        if first_unseen:
            s.write(f"* OK [UNSEEN {first_unseen}] First unseen.")
    s.write(f"* OK [UIDVALIDITY {mb.uidvalidity}] UIDs valid")
    s.write(f"* OK [UIDNEXT {mb.uidnext}] Predicted next UID")
    s.write(f"* OK [HIGHESTMODSEQ {mb.highestmodseq}] Highest")
    if s.rev2:
        s.write(b"* LIST () \"/\" " + mailbox_out(s, mb.name))
    if qresync_args is not None:
        await _qresync_select(s, qresync_args)
    return ("READ-ONLY" if s.selected.readonly else "READ-WRITE"), "Select completed."


async def _qresync_select(s: CommandSession, args: tuple[Token, ...]) -> None:
    """QRESYNC (uidvalidity modseq [known-uids [seq-match]]): VANISHED (EARLIER) and changed FETCHes."""
    if len(args) < 2:
        raise ParseError("QRESYNC needs a UIDVALIDITY and a mod-sequence")
    sel = s.selected
    assert sel is not None
    mb = sel.mailbox
    uidvalidity = number(args[0], nz=True)
    modseq = number(args[1], bits=63)
    known = SequenceSet.parse(_atom_text(args[2])) if len(args) > 2 else None
    if uidvalidity != mb.uidvalidity:
        return

    def work() -> tuple[str, list[bytes]]:
        gone = mb.expunged_since(modseq)
        uids = list(mb.uids)
        star = max(mb.uidnext - 1, 1)
        if gone is None:
            vanished = missing_ranges(known, uids, star)
        else:
            vanished = format_set(u for u in gone if known is None or known.contains(u, star))
        changed = mb.changed_since(modseq)
        return vanished, fetch_lines(s, mb, changed, ["UID", "FLAGS", "MODSEQ"])

    vanished, lines = await asyncio.to_thread(work)
    s.announce_keywords()
    if vanished:
        s.write(f"* VANISHED (EARLIER) {vanished}")
    for line in lines:
        s.write(line)


def _atom_text(tok: Token) -> str:
    if isinstance(tok, Atom):
        return tok.value
    if isinstance(tok, String):
        return tok.text()
    raise ParseError("Expected a sequence set")


async def cmd_check(s: CommandSession, cmd: Any) -> Result:
    if cmd.args:
        raise ParseError("CHECK takes no arguments")
    return None, "Check completed."


async def cmd_close(s: CommandSession, cmd: Any) -> Result:
    if cmd.args:
        raise ParseError(f"{cmd.name} takes no arguments")
    sel = s.selected
    assert sel is not None
    if cmd.name == "CLOSE" and not sel.readonly:
        try:
            await asyncio.to_thread(sel.mailbox.expunge, None)
        except StorageError:
            pass
    await s.unselect()
    return None, f"{cmd.name.capitalize()} completed."


async def cmd_expunge(s: CommandSession, cmd: ExpungeCommand) -> Result:
    sel = s.selected
    assert sel is not None
    uids = None if cmd.sequence is None else resolve_set(s, cmd.sequence, uid=True)
    if sel.readonly:
        raise CommandError("Mailbox is read-only.", "READ-ONLY")
    await asyncio.to_thread(sel.mailbox.expunge, uids)
    code = None
    if s.condstore:
        await s.updates(cmd)
        code = f"HIGHESTMODSEQ {sel.mailbox.highestmodseq}"
    return code, "Expunge completed."


COMMANDS: CommandTable = {
    "SELECT": (cmd_select, AUTH),
    "EXAMINE": (cmd_select, AUTH),
    "CHECK": (cmd_check, SEL),
    "CLOSE": (cmd_close, SEL),
    "UNSELECT": (cmd_close, SEL),
    "EXPUNGE": (cmd_expunge, SEL),  # takes its typed command
}
