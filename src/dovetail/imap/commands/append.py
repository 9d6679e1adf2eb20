"""APPEND (with UTF8=ACCEPT's ``UTF8 (~{n})`` form): a message into a mailbox, answered with APPENDUID."""

from __future__ import annotations

import asyncio
from typing import Any

from dovetail.imap.commands.arguments import mailbox_arg, parse_flags
from dovetail.imap.commands.context import CommandSession, CommandTable, Result
from dovetail.imap.response import parse_date_time
from dovetail.imap.state import AUTH, CommandError
from dovetail.imap.tokens import Atom, ListToken, ParseError, String
from dovetail.mime.binaryconv import encode_binary_parts
from dovetail.storage.api import MailboxNotFound


async def cmd_append(s: CommandSession, cmd: Any) -> Result:
    args = list(cmd.args)
    if len(args) < 2:
        raise ParseError("APPEND needs a mailbox and a message")
    name = mailbox_arg(s, args.pop(0))
    flags: list[str] = []
    date = None
    if args and isinstance(args[0], ListToken):
        flags = parse_flags(args.pop(0).items)
    if len(args) >= 2 and isinstance(args[0], String) and not args[0].literal:
        try:
            date = parse_date_time(args.pop(0).text())
        except (ValueError, KeyError) as exc:
            raise ParseError("Invalid date-time") from exc
    if len(args) == 2 and isinstance(args[0], Atom) and args[0].value.upper() == "UTF8" and \
            isinstance(args[1], ListToken) and len(args[1].items) == 1 and isinstance(args[1].items[0], String):
        args = [args[1].items[0]]  # UTF8=ACCEPT: APPEND box UTF8 (~{n} data)
    if len(args) != 1 or not isinstance(args[0], String) or not args[0].literal:
        raise ParseError("APPEND needs the message as a literal")
    data = args[0].value
    binary = args[0].binary
    if not data:
        raise CommandError("Can't save a zero byte message.")
    if len(data) > s.limits.max_literal:
        raise CommandError("Message too large", "TOOBIG")
    assert s.storage is not None
    storage = s.storage

    def save() -> Any:
        # A literal8 may carry Content-Transfer-Encoding: binary parts: stored in base64 (Dovecot's way).
        return storage.append(name, encode_binary_parts(data) if binary else data, flags, date)

    try:
        res = await asyncio.to_thread(save)
    except MailboxNotFound as exc:
        raise CommandError("Mailbox doesn't exist: " + name[:100], "TRYCREATE") from exc
    uid = next(iter(res.uid_map.values()))
    return f"APPENDUID {res.uidvalidity} {uid}", "Append completed."


COMMANDS: CommandTable = {"APPEND": (cmd_append, AUTH)}
