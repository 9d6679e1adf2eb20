"""Mailboxes by name: CREATE, DELETE, RENAME, (UN)SUBSCRIBE, LIST (with LIST-EXTENDED and LIST-STATUS),
LSUB and STATUS."""

from __future__ import annotations

import asyncio
from typing import Any

from dovetail.imap.commands.arguments import mailbox_arg, mailbox_out
from dovetail.imap.commands.context import CommandSession, CommandTable, Result
from dovetail.imap.state import AUTH, CommandError
from dovetail.imap.tokens import Atom, ListToken, ParseError, Token, astring
from dovetail.storage.api import SPECIAL_USE_FOLDERS, MailboxInfo, StorageError
from dovetail.storage.names import decode_mutf7, parents, pattern_regex

_STATUS_ITEMS = ("MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "RECENT", "HIGHESTMODSEQ", "SIZE", "DELETED")


async def cmd_create(s: CommandSession, cmd: Any) -> Result:
    if not cmd.args or len(cmd.args) > 2:
        raise ParseError("CREATE needs a mailbox name")
    name = mailbox_arg(s, cmd.args[0])
    use = None
    if len(cmd.args) == 2:
        params = cmd.args[1]
        if not isinstance(params, ListToken) or len(params.items) != 2 or \
                not isinstance(params.items[0], Atom) or params.items[0].value.upper() != "USE":
            raise ParseError("Invalid CREATE parameters")
        uses = params.items[1]
        if not isinstance(uses, ListToken) or len(uses.items) != 1 or not isinstance(uses.items[0], Atom):
            raise CommandError("Exactly one special-use attribute is supported", "USEATTR")
        use = next((k for k in SPECIAL_USE_FOLDERS if k.upper() == uses.items[0].value.upper()), None)
        if use is None:
            raise CommandError("Unknown special-use attribute", "USEATTR")
    name = name.rstrip("/") or name
    assert s.storage is not None
    await asyncio.to_thread(s.storage.create, name, use)
    return None, "Create completed."


async def cmd_delete(s: CommandSession, cmd: Any) -> Result:
    if len(cmd.args) != 1:
        raise ParseError("DELETE needs a mailbox name")
    name = mailbox_arg(s, cmd.args[0])
    assert s.storage is not None
    if s.selected is not None and _same(s.selected.mailbox.name, name):
        await s.unselect()
        if s.qresync:
            s.write("* OK [CLOSED] Mailbox closed.")
    await asyncio.to_thread(s.storage.delete, name)
    return None, "Delete completed."


async def cmd_rename(s: CommandSession, cmd: Any) -> Result:
    if len(cmd.args) != 2:
        raise ParseError("RENAME needs two mailbox names")
    old, new = mailbox_arg(s, cmd.args[0]), mailbox_arg(s, cmd.args[1])
    assert s.storage is not None
    await asyncio.to_thread(s.storage.rename, old, new)
    return None, "Rename completed."


async def cmd_subscribe(s: CommandSession, cmd: Any) -> Result:
    if len(cmd.args) != 1:
        raise ParseError(f"{cmd.name} needs a mailbox name")
    name = mailbox_arg(s, cmd.args[0])
    assert s.storage is not None
    fn = s.storage.subscribe if cmd.name == "SUBSCRIBE" else s.storage.unsubscribe
    await asyncio.to_thread(fn, name)
    return None, f"{cmd.name.capitalize()} completed."


def _same(a: str, b: str) -> bool:
    return a == b or a.upper() == b.upper() == "INBOX"


async def cmd_list(s: CommandSession, cmd: Any) -> Result:
    args = list(cmd.args)
    selection: set[str] = set()
    if args and isinstance(args[0], ListToken):
        selection = {_word(t) for t in args.pop(0).items}
        if not selection <= {"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"}:
            raise ParseError("Unknown LIST selection option")
        if "RECURSIVEMATCH" in selection and not selection - {"RECURSIVEMATCH", "REMOTE"}:
            raise ParseError("RECURSIVEMATCH needs another selection option")
    if len(args) < 2:
        raise ParseError("LIST needs a reference and a pattern")
    reference = _list_string(s, args.pop(0))
    pat = args.pop(0)
    patterns = [_list_string(s, t) for t in pat.items] if isinstance(pat, ListToken) else [_list_string(s, pat)]
    returns: set[str] = set()
    status_items: list[str] = []
    if args:
        if len(args) != 2 or _word(args[0]) != "RETURN" or not isinstance(args[1], ListToken):
            raise ParseError("Invalid LIST return options")
        items = list(args[1].items)
        while items:
            opt = _word(items.pop(0))
            if opt == "STATUS":
                wanted = items.pop(0) if items else None
                if not isinstance(wanted, ListToken):
                    raise ParseError("STATUS needs a list")
                status_items = _status_items(wanted.items)
            elif opt not in ("SUBSCRIBED", "CHILDREN", "SPECIAL-USE", "MYRIGHTS"):
                raise ParseError("Unknown LIST return option")
            returns.add(opt)
    assert s.storage is not None
    storage = s.storage
    if patterns == [""]:
        s.write('* LIST (\\Noselect) "/" ""')
        return None, "List completed."

    # RFC 5258: an extended LIST returns children attributes only when RETURN (CHILDREN) asks (a
    # plain LIST always does, as Dovecot).
    children = "CHILDREN" in returns or not (selection or returns)
    recursive = "RECURSIVEMATCH" in selection

    def work() -> list[tuple[MailboxInfo, dict[str, int] | None, bool, str | None]]:
        seen: dict[str, MailboxInfo] = {}
        for p in patterns:
            for info in storage.list_mailboxes(reference, p):
                seen.setdefault(info.name, info)
        subscribed = set(storage.list_subscribed("*")) if ("SUBSCRIBED" in selection | returns) else set()
        childinfo: dict[str, str] = {}
        if "SUBSCRIBED" in selection:
            # Subscriptions to mailboxes that no longer exist are listed too, as \NonExistent.
            rxs = [pattern_regex(reference, p) for p in patterns]
            for name in sorted(subscribed - set(seen)):
                if any(rx.match(name) for rx in rxs):
                    seen[name] = MailboxInfo(name, "/", frozenset({"\\NonExistent"}), None)
                elif recursive:
                    # RECURSIVEMATCH: a parent the patterns match is returned with CHILDINFO for a
                    # subscribed descendant that they do not match (one they match is listed itself).
                    for parent in parents(name):
                        if parent not in subscribed and any(rx.match(parent) for rx in rxs):
                            childinfo[parent] = "SUBSCRIBED"
                            if parent not in seen:
                                seen[parent] = MailboxInfo(parent, "/", frozenset({"\\NonExistent"}), None)
        out = []
        for info in seen.values():
            if "SUBSCRIBED" in selection and info.name not in subscribed and info.name not in childinfo:
                continue
            if "SPECIAL-USE" in selection and not info.special_use:
                continue
            st = None
            if status_items and "\\Noselect" not in info.attributes and "\\NonExistent" not in info.attributes:
                try:
                    st = storage.status(info.name, [i for i in status_items if i != "DELETED"])
                except StorageError:
                    st = None
            out.append((info, st, info.name in subscribed, childinfo.get(info.name)))
        return out

    for info, st, is_sub, child_match in sorted(await asyncio.to_thread(work), key=lambda r: _order(r[0].name)):
        attrs = [a for a in info.attributes if a != "\\Subscribed"
                 and (children or a not in ("\\HasChildren", "\\HasNoChildren"))]
        if is_sub and "SUBSCRIBED" in selection | returns:
            attrs.append("\\Subscribed")
        line = b"* LIST (" + " ".join(attrs).encode() + b') "/" ' + mailbox_out(s, info.name)
        if child_match:
            line += b' ("CHILDINFO" ("' + child_match.encode() + b'"))'
        s.write(line)
        if st is not None:
            s.write(_status_line(s, info.name, st, status_items))
    return None, "List completed."


def _order(name: str) -> tuple[int, str]:
    return (0 if name.upper() == "INBOX" else 1, name)


async def cmd_lsub(s: CommandSession, cmd: Any) -> Result:
    if len(cmd.args) != 2:
        raise ParseError("LSUB needs a reference and a pattern")
    reference = _list_string(s, cmd.args[0])
    pattern = _list_string(s, cmd.args[1])
    assert s.storage is not None
    storage = s.storage

    def work() -> list[tuple[str, bool]]:
        rx = pattern_regex(reference, pattern)
        subscribed = storage.list_subscribed("*")
        found = {n: False for n in subscribed if rx.match(n)}
        if "%" in pattern:
            # RFC 3501 §6.3.9: with "%", a parent that is not subscribed itself but has a subscribed
            # child at a level the pattern does not reach is returned as \Noselect.
            for name in subscribed:
                for parent in parents(name):
                    if parent not in found and rx.match(parent):
                        found[parent] = True
        return sorted(found.items(), key=lambda item: _order(item[0]))

    for name, noselect in await asyncio.to_thread(work):
        s.write(b'* LSUB (' + (b"\\Noselect" if noselect else b"") + b') "/" ' + mailbox_out(s, name))
    return None, "Lsub completed."


async def cmd_status(s: CommandSession, cmd: Any) -> Result:
    if len(cmd.args) != 2 or not isinstance(cmd.args[1], ListToken):
        raise ParseError("STATUS needs a mailbox name and a list of items")
    name = mailbox_arg(s, cmd.args[0])
    items = _status_items(cmd.args[1].items)
    assert s.storage is not None
    st = await asyncio.to_thread(s.storage.status, name, [i for i in items if i != "DELETED"])
    s.write(_status_line(s, name, st, items))
    return None, "Status completed."


def _status_items(tokens: tuple[Token, ...]) -> list[str]:
    items = []
    for t in tokens:
        w = _word(t)
        if w not in _STATUS_ITEMS:
            raise ParseError(f"Unknown STATUS item {w[:30]}")
        items.append(w)
    if not items:
        raise ParseError("Empty STATUS item list")
    return items


def _status_line(s: CommandSession, name: str, st: dict[str, int], items: list[str]) -> bytes:
    parts = [f"{i} {st[i]}" for i in items if i in st]
    if "DELETED" in items and "DELETED" not in st:
        parts.append(f"DELETED {st.get('DELETED', 0)}")
    return b"* STATUS " + mailbox_out(s, name) + b" (" + " ".join(parts).encode() + b")"


def _word(tok: Token) -> str:
    if not isinstance(tok, Atom):
        raise ParseError("Expected an atom")
    return tok.value.upper()


def _list_string(s: CommandSession, tok: Token) -> str:
    raw = astring(tok)
    if s.utf8:
        return raw.decode("utf-8", "replace")
    text = raw.decode("utf-8", "replace")
    try:
        return decode_mutf7(text)
    except ValueError:
        return text


COMMANDS: CommandTable = {
    "CREATE": (cmd_create, AUTH),
    "DELETE": (cmd_delete, AUTH),
    "RENAME": (cmd_rename, AUTH),
    "SUBSCRIBE": (cmd_subscribe, AUTH),
    "UNSUBSCRIBE": (cmd_subscribe, AUTH),
    "LIST": (cmd_list, AUTH),
    "LSUB": (cmd_lsub, AUTH),
    "STATUS": (cmd_status, AUTH),
}
