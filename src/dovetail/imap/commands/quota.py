"""QUOTA (RFC 9208): GETQUOTAROOT, GETQUOTA and SETQUOTA over the account's one quota root.

Each account has one limit on what all its mailboxes hold (the directory's mailbox quota, the same one
SMTP delivery enforces), reported as the STORAGE resource of the root ``User quota`` in units of 1024
octets, as Dovecot names and counts it. An account without a limit has no quota root. The limit is
the operator's to set (``dovetail mailbox``), so SETQUOTA is refused and QUOTASET is not advertised.
APPEND and COPY check the limit before storing (``NO [OVERQUOTA]``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from dovetail.imap.commands.arguments import mailbox_arg, mailbox_out
from dovetail.imap.commands.context import CommandSession, CommandTable, Result
from dovetail.imap.response import string
from dovetail.imap.state import AUTH, CommandError
from dovetail.imap.tokens import ParseError, astring

ROOT = "User quota"


def _quota_line(used_bytes: int, limit_bytes: int) -> bytes:
    used_kb = (used_bytes + 1023) // 1024
    return b"* QUOTA " + string(ROOT) + b" (STORAGE %d %d)" % (used_kb, limit_bytes // 1024)


async def cmd_getquotaroot(s: CommandSession, cmd: Any) -> Result:
    if len(cmd.args) != 1:
        raise ParseError("GETQUOTAROOT needs a mailbox name")
    name = mailbox_arg(s, cmd.args[0])
    assert s.storage is not None
    storage = s.storage
    limit = s.quota_bytes

    def work() -> int | None:
        if not storage.exists(name):
            return None
        return storage.usage().bytes if limit else 0

    used = await asyncio.to_thread(work)
    if used is None:
        raise CommandError("Mailbox doesn't exist: " + name[:100], "NONEXISTENT")
    if not limit:
        s.write(b"* QUOTAROOT " + mailbox_out(s, name))
        return None, "Getquotaroot completed."
    s.write(b"* QUOTAROOT " + mailbox_out(s, name) + b" " + string(ROOT))
    s.write(_quota_line(used, limit))
    return None, "Getquotaroot completed."


async def cmd_getquota(s: CommandSession, cmd: Any) -> Result:
    if len(cmd.args) != 1:
        raise ParseError("GETQUOTA needs a quota root")
    root = astring(cmd.args[0]).decode("utf-8", "replace")
    limit = s.quota_bytes
    if root != ROOT or not limit:
        raise CommandError("Quota root doesn't exist.", "NONEXISTENT")
    assert s.storage is not None
    used = (await asyncio.to_thread(s.storage.usage)).bytes
    s.write(_quota_line(used, limit))
    return None, "Getquota completed."


async def cmd_setquota(s: CommandSession, cmd: Any) -> Result:
    raise CommandError("Quota is set by the administrator (dovetail mailbox).", "NOPERM")


COMMANDS: CommandTable = {
    "GETQUOTAROOT": (cmd_getquotaroot, AUTH),
    "GETQUOTA": (cmd_getquota, AUTH),
    "SETQUOTA": (cmd_setquota, AUTH),
}
