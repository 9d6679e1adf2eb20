"""COPY and MOVE (and their UID forms), answered with COPYUID (UIDPLUS); read by
:func:`dovetail.imap.typed.parse_copy`."""

from __future__ import annotations

import asyncio
from typing import Any

from dovetail.imap.commands.arguments import mailbox_name, resolve_set
from dovetail.imap.commands.context import CommandSession, CommandTable, Result
from dovetail.imap.sequence import format_ordered
from dovetail.imap.state import SEL, CommandError
from dovetail.imap.typed import CopyCommand
from dovetail.storage.api import MailboxNotFound


async def cmd_copy(s: CommandSession, cmd: CopyCommand) -> Result:
    sel = s.selected
    assert sel is not None
    uids = resolve_set(s, cmd.sequence, cmd.uid)
    dest = mailbox_name(s, cmd.mailbox)
    move = cmd.move
    if move and sel.readonly:
        raise CommandError("Mailbox is read-only.", "READ-ONLY")
    if not uids:
        return None, f"No messages found to {cmd.name.lower()}."
    mb = sel.mailbox
    storage = s.storage
    limit = s.quota_bytes

    def work() -> Any:
        if not move and limit and storage is not None:
            size = sum(i.size for i in mb.fetch_info(uids, envelope=False, bodystructure=False, dates=False))
            storage.check_quota(limit, size)  # OverQuota: NO [OVERQUOTA], nothing copied
        return mb.move(uids, dest) if move else mb.copy(uids, dest)

    try:
        res = await asyncio.to_thread(work)
    except MailboxNotFound as exc:
        raise CommandError(f"Mailbox doesn't exist: {dest[:100]}", "TRYCREATE") from exc
    src = sorted(res.uid_map)
    code = f"COPYUID {res.uidvalidity} {format_ordered(src)} " \
           f"{format_ordered([res.uid_map[u] for u in src])}" if src else None
    if move:
        if code:
            s.write(f"* OK [{code}] Moved UIDs.")
        return None, "Move completed."
    return code, "Copy completed."


COMMANDS: CommandTable = {  # they take their typed commands
    "COPY": (cmd_copy, SEL),
    "MOVE": (cmd_copy, SEL),
}
