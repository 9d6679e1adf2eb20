"""APPEND: one message, several at once (MULTIAPPEND, RFC 3502), or one assembled from literal text and
parts of messages already here (CATENATE, RFC 4469), with UTF8=ACCEPT's ``UTF8 (~{n})`` form; answered
with APPENDUID.

MULTIAPPEND is all or nothing: every message is put together first (a bad CATENATE URL or an oversized
result fails the whole command before anything is stored), then they are appended in order, and if one
append fails the ones already stored are expunged again.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import unquote

from dovetail.imap.commands.arguments import mailbox_arg, parse_flags
from dovetail.imap.commands.context import CommandSession, CommandTable, Result
from dovetail.imap.response import parse_date_time
from dovetail.imap.sequence import format_set
from dovetail.imap.state import AUTH, CommandError
from dovetail.imap.tokens import Atom, ListToken, ParseError, String, Token
from dovetail.mime.binaryconv import encode_binary_parts
from dovetail.storage.api import MailboxNotFound, MailStorage, StorageError, StoreMode
from dovetail.storage.names import decode_mutf7

MAX_MESSAGES = 1000  # per MULTIAPPEND command
MAX_CATENATE_PARTS = 1000

# RFC 5092 relative IMAP URL as CATENATE takes it: /mailbox[;UIDVALIDITY=n]/;UID=n[/;SECTION=s][/;PARTIAL=o[.l]]
_URL = re.compile(r"^/(?P<mailbox>[^;]+?)(?:;UIDVALIDITY=(?P<uidvalidity>\d+))?/;UID=(?P<uid>\d+)"
                  r"(?:/;SECTION=(?P<section>[^/;]*))?(?:/;PARTIAL=(?P<start>\d+)(?:\.(?P<length>\d+))?)?$", re.I)


@dataclass
class _Message:
    flags: list[str]
    date: datetime | None
    parts: list[tuple[str, bytes]]  # ("text", data) | ("url", url)
    binary: bool = False


async def cmd_append(s: CommandSession, cmd: Any) -> Result:
    args = list(cmd.args)
    if len(args) < 2:
        raise ParseError("APPEND needs a mailbox and a message")
    name = mailbox_arg(s, args.pop(0))
    messages: list[_Message] = []
    while args:
        if len(messages) >= MAX_MESSAGES:
            raise CommandError(f"At most {MAX_MESSAGES} messages per APPEND", "LIMIT")
        messages.append(_one_message(args))
    assert s.storage is not None
    storage = s.storage
    limit = s.limits.max_literal
    quota = s.quota_bytes

    def save() -> tuple[int, list[int]]:
        if not storage.exists(name):
            raise MailboxNotFound(name)
        datas = [_assemble(storage, m, limit) for m in messages]
        storage.check_quota(quota, sum(len(d) for d in datas))  # OverQuota: NO [OVERQUOTA]
        uidvalidity, uids = 0, []
        try:
            for m, data in zip(messages, datas, strict=True):
                res = storage.append(name, data, m.flags, m.date)
                uidvalidity = res.uidvalidity
                uids.append(next(iter(res.uid_map.values())))
        except BaseException:
            _take_back(storage, name, uids)
            raise
        return uidvalidity, uids

    try:
        uidvalidity, uids = await asyncio.to_thread(save)
    except MailboxNotFound as exc:
        raise CommandError("Mailbox doesn't exist: " + name[:100], "TRYCREATE") from exc
    return f"APPENDUID {uidvalidity} {format_set(uids)}", "Append completed."


def _one_message(args: list[Token]) -> _Message:
    """Take one ``[flags] [date] (literal | UTF8 (literal) | CATENATE (...))`` off the front of ``args``."""
    flags: list[str] = []
    date = None
    first = args[0] if args else None
    if isinstance(first, ListToken):
        args.pop(0)
        flags = parse_flags(first.items)
    first = args[0] if args else None
    if len(args) >= 2 and isinstance(first, String) and not first.literal:
        args.pop(0)
        try:
            date = parse_date_time(first.text())
        except (ValueError, KeyError) as exc:
            raise ParseError("Invalid date-time") from exc
    if not args:
        raise ParseError("APPEND needs the message as a literal")
    head = args.pop(0)
    if isinstance(head, Atom) and head.value.upper() in ("UTF8", "CATENATE"):
        group = args.pop(0) if args else None
        if not isinstance(group, ListToken):
            raise ParseError(f"{head.value.upper()} needs a parenthesised list")
        items = list(group.items)
        if head.value.upper() == "UTF8":  # UTF8=ACCEPT: APPEND box UTF8 (~{n} data)
            if len(items) != 1 or not isinstance(items[0], String) or not items[0].literal:
                raise ParseError("UTF8 needs one literal")
            return _Message(flags, date, [("text", items[0].value)], items[0].binary)
        return _catenate(flags, date, items)
    if not isinstance(head, String) or not head.literal:
        raise ParseError("APPEND needs the message as a literal")
    return _Message(flags, date, [("text", head.value)], head.binary)


def _catenate(flags: list[str], date: datetime | None, items: list[Token]) -> _Message:
    if not items or len(items) % 2 or len(items) > 2 * MAX_CATENATE_PARTS:
        raise ParseError("CATENATE needs TEXT and URL parts")
    parts: list[tuple[str, bytes]] = []
    binary = False
    for kind, value in zip(items[::2], items[1::2], strict=True):
        word = kind.value.upper() if isinstance(kind, Atom) else ""
        if word == "TEXT" and isinstance(value, String) and value.literal:
            parts.append(("text", value.value))
            binary = binary or value.binary
        elif word == "URL" and isinstance(value, String | Atom):
            parts.append(("url", value.value.encode() if isinstance(value, Atom) else value.value))
        else:
            raise ParseError("CATENATE parts are TEXT literal or URL string")
    return _Message(flags, date, parts, binary)


def _assemble(storage: MailStorage, m: _Message, limit: int) -> bytes:
    """The message's bytes: its literal, or its CATENATE parts joined (URLs fetched from our own mailboxes)."""
    out = bytearray()
    for kind, value in m.parts:
        out += value if kind == "text" else _fetch_url(storage, value.decode("utf-8", "replace"))
        if len(out) > limit:
            raise CommandError("Message too large", "TOOBIG")
    if not out:
        raise CommandError("Can't save a zero byte message.")
    data = bytes(out)
    # A literal8 may carry Content-Transfer-Encoding: binary parts: stored in base64 (Dovecot's way).
    return encode_binary_parts(data) if m.binary else data


def _fetch_url(storage: MailStorage, url: str) -> bytes:
    m = _URL.match(url)
    if m is None:
        raise CommandError(f"Bad or unsupported URL {url[:200]!r}", f"BADURL {_url_atom(url)}")
    raw_name = unquote(m.group("mailbox"))
    try:
        name = decode_mutf7(raw_name)
    except ValueError:
        name = raw_name
    try:
        view = storage.select(name, readonly=True)
    except StorageError as exc:
        raise CommandError(f"URL names no mailbox: {url[:200]!r}", f"BADURL {_url_atom(url)}") from exc
    try:
        if m.group("uidvalidity") and int(m.group("uidvalidity")) != view.uidvalidity:
            raise CommandError(f"URL's UIDVALIDITY is not the mailbox's: {url[:200]!r}", f"BADURL {_url_atom(url)}")
        uid = int(m.group("uid"))
        if view.seq_of(uid) is None:
            raise CommandError(f"URL names no message: {url[:200]!r}", f"BADURL {_url_atom(url)}")
        partial = None
        if m.group("start") is not None:
            partial = (int(m.group("start")), int(m.group("length")) if m.group("length") else 0)
        try:
            data = view.get_section(uid, (m.group("section") or "").upper(), None)
        except (StorageError, ValueError) as exc:
            raise CommandError(f"URL names no part: {url[:200]!r}", f"BADURL {_url_atom(url)}") from exc
    finally:
        view.close()
    if partial is not None:
        start, length = partial
        data = data[start : start + length] if length else data[start:]
    return data


def _url_atom(url: str) -> str:
    """The URL as the BADURL response code's argument (an atom: no spaces or brackets)."""
    return re.sub(r"[\s\]\[()\"\\{}%*]", "", url)[:200] or "URL"


def _take_back(storage: MailStorage, name: str, uids: list[int]) -> None:
    """Expunge what a failed MULTIAPPEND had stored already (all or nothing, RFC 3502)."""
    if not uids:
        return
    try:
        with storage.select(name) as view:
            view.store_flags(uids, StoreMode.ADD, ["\\Deleted"])
            view.expunge(uids)
    except StorageError:
        pass


COMMANDS: CommandTable = {"APPEND": (cmd_append, AUTH)}
