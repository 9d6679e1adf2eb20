"""Mailbox-level commands: SELECT/EXAMINE, CREATE, DELETE, RENAME, (UN)SUBSCRIBE, LIST, LSUB, STATUS,
APPEND, CHECK, CLOSE, UNSELECT, EXPUNGE.

Each handler takes the session and the parsed command, and returns ``(code, text)`` for the tagged OK
or raises ``CommandError``/``ParseError``/``StorageError``; the session turns those into responses.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from dovetail.imap.parser import Atom, ListToken, ParseError, String, Token, astring, number
from dovetail.imap.response import astring as astring_out
from dovetail.imap.response import flag_list, parse_date_time
from dovetail.imap.sequence import SequenceSet, format_set
from dovetail.imap.state import AUTH, SEL, CommandError, Selected, State
from dovetail.storage.api import (
    SPECIAL_USE_FOLDERS,
    SYSTEM_FLAGS,
    MailboxNotFound,
    StorageError,
)
from dovetail.storage.names import decode_mutf7, encode_mutf7

if TYPE_CHECKING:
    from dovetail.imap.session import Session

Result = tuple[str | None, str]
_STATUS_ITEMS = ("MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "RECENT", "HIGHESTMODSEQ", "SIZE", "DELETED")
_FLAG_NAMES = {f.upper(): f for f in SYSTEM_FLAGS}


# -- names and flags -------------------------------------------------------------------------------------


def mailbox_arg(s: Session, tok: Token) -> str:
    """A mailbox name argument: UTF-8 once enabled, modified UTF-7 otherwise."""
    raw = astring(tok)
    if s.utf8:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CommandError("Mailbox name is not valid UTF-8", "CANNOT") from exc
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        try:
            return raw.decode("utf-8")  # 8-bit names from clients that skip mUTF-7
        except UnicodeDecodeError as exc:
            raise CommandError("Mailbox name is not valid UTF-8", "CANNOT") from exc
    try:
        return decode_mutf7(text)
    except ValueError as exc:
        raise CommandError("Invalid modified UTF-7 in mailbox name", "CANNOT") from exc


def mailbox_out(s: Session, name: str) -> bytes:
    return astring_out(name if s.utf8 else encode_mutf7(name), s.utf8)


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


# -- SELECT / EXAMINE -----------------------------------------------------------------------------------


async def cmd_select(s: Session, cmd: Any) -> Result:
    return await _select(s, cmd, readonly=cmd.name == "EXAMINE")


async def _select(s: Session, cmd: Any, readonly: bool) -> Result:
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
                if not items or not isinstance(items[0], ListToken):
                    raise ParseError("QRESYNC needs parameters")
                qresync_args = items.pop(0).items
            else:
                raise ParseError("Unknown SELECT parameter")
    if s.selected is not None:
        await s._unselect()
        if s.qresync:
            s.write("* OK [CLOSED] Previous mailbox closed.")
    assert s.storage is not None
    storage = s.storage

    def open_view() -> tuple[Any, int | None]:
        view = storage.select(name, readonly=readonly)
        return view, view.first_unseen_seq()

    mb, first_unseen = await asyncio.to_thread(open_view)
    s.selected = Selected(mb, readonly or mb.readonly)
    s.state = State.SELECTED
    flags = flag_list(SYSTEM_FLAGS).decode()
    s.write(f"* FLAGS {flags}")
    if s.selected.readonly:
        s.write("* OK [PERMANENTFLAGS ()] Read-only mailbox.")
    else:
        s.write(f"* OK [PERMANENTFLAGS {flags[:-1]} \\*)] Flags permitted.")
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


async def _qresync_select(s: Session, args: tuple[Token, ...]) -> None:
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
    from dovetail.imap.commands_message import fetch_lines

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
    if vanished:
        s.write(f"* VANISHED (EARLIER) {vanished}")
    for line in lines:
        s.write(line)


def missing_ranges(known: SequenceSet | None, present: list[int], star: int) -> str:
    """The UIDs of ``known`` (or 1..star) that are not ``present`` (sorted), as a compact set.

    Computed range by range, so a client naming ``1:4294967295`` costs no more than the mailbox size.
    """
    import bisect

    ranges = sorted(known.bounds(star)) if known is not None else [(1, star)]
    out: list[str] = []
    for a, b in ranges:
        i = bisect.bisect_left(present, a)
        cur = a
        while cur <= b:
            nxt = present[i] if i < len(present) else None
            if nxt is None or nxt > b:
                out.append(str(cur) if cur == b else f"{cur}:{b}")
                break
            if nxt > cur:
                out.append(str(cur) if cur == nxt - 1 else f"{cur}:{nxt - 1}")
            cur = nxt + 1
            i += 1
        if len(out) > 100_000:
            break
    return ",".join(out)


def _atom_text(tok: Token) -> str:
    if isinstance(tok, Atom):
        return tok.value
    if isinstance(tok, String):
        return tok.text()
    raise ParseError("Expected a sequence set")


# -- CREATE / DELETE / RENAME / SUBSCRIBE ---------------------------------------------------------------


async def cmd_create(s: Session, cmd: Any) -> Result:
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


async def cmd_delete(s: Session, cmd: Any) -> Result:
    if len(cmd.args) != 1:
        raise ParseError("DELETE needs a mailbox name")
    name = mailbox_arg(s, cmd.args[0])
    assert s.storage is not None
    if s.selected is not None and _same(s.selected.mailbox.name, name):
        await s._unselect()
        if s.qresync:
            s.write("* OK [CLOSED] Mailbox closed.")
    await asyncio.to_thread(s.storage.delete, name)
    return None, "Delete completed."


async def cmd_rename(s: Session, cmd: Any) -> Result:
    if len(cmd.args) != 2:
        raise ParseError("RENAME needs two mailbox names")
    old, new = mailbox_arg(s, cmd.args[0]), mailbox_arg(s, cmd.args[1])
    assert s.storage is not None
    await asyncio.to_thread(s.storage.rename, old, new)
    return None, "Rename completed."


async def cmd_subscribe(s: Session, cmd: Any) -> Result:
    if len(cmd.args) != 1:
        raise ParseError(f"{cmd.name} needs a mailbox name")
    name = mailbox_arg(s, cmd.args[0])
    assert s.storage is not None
    fn = s.storage.subscribe if cmd.name == "SUBSCRIBE" else s.storage.unsubscribe
    await asyncio.to_thread(fn, name)
    return None, f"{cmd.name.capitalize()} completed."


def _same(a: str, b: str) -> bool:
    return a == b or a.upper() == b.upper() == "INBOX"


# -- LIST / LSUB / STATUS -------------------------------------------------------------------------------


async def cmd_list(s: Session, cmd: Any) -> Result:
    args = list(cmd.args)
    selection: set[str] = set()
    if args and isinstance(args[0], ListToken):
        selection = {_word(t) for t in args.pop(0).items}
        if not selection <= {"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"}:
            raise ParseError("Unknown LIST selection option")
        if selection == {"RECURSIVEMATCH"}:
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
                if not items or not isinstance(items[0], ListToken):
                    raise ParseError("STATUS needs a list")
                status_items = _status_items(items.pop(0).items)
            elif opt not in ("SUBSCRIBED", "CHILDREN", "SPECIAL-USE", "MYRIGHTS"):
                raise ParseError("Unknown LIST return option")
            returns.add(opt)
    assert s.storage is not None
    storage = s.storage
    if patterns == [""]:
        s.write('* LIST (\\Noselect) "/" ""')
        return None, "List completed."

    def work() -> list[tuple[Any, dict[str, int] | None, bool]]:
        seen: dict[str, Any] = {}
        for p in patterns:
            for info in storage.list_mailboxes(reference, p):
                seen.setdefault(info.name, info)
        subscribed = set(storage.list_subscribed("*")) if ("SUBSCRIBED" in selection | returns) else set()
        out = []
        for info in seen.values():
            if "SUBSCRIBED" in selection and info.name not in subscribed:
                continue
            if "SPECIAL-USE" in selection and not info.special_use:
                continue
            st = None
            if status_items and "\\Noselect" not in info.attributes and "\\NonExistent" not in info.attributes:
                try:
                    st = storage.status(info.name, [i for i in status_items if i != "DELETED"])
                except StorageError:
                    st = None
            out.append((info, st, info.name in subscribed))
        return out

    for info, st, is_sub in await asyncio.to_thread(work):
        attrs = [a for a in info.attributes if a != "\\Subscribed"]
        if is_sub and "SUBSCRIBED" in selection | returns:
            attrs.append("\\Subscribed")
        line = b"* LIST (" + " ".join(attrs).encode() + b') "/" ' + mailbox_out(s, info.name)
        s.write(line)
        if st is not None:
            s.write(_status_line(s, info.name, st, status_items))
    return None, "List completed."


async def cmd_lsub(s: Session, cmd: Any) -> Result:
    if len(cmd.args) != 2:
        raise ParseError("LSUB needs a reference and a pattern")
    reference = _list_string(s, cmd.args[0])
    pattern = _list_string(s, cmd.args[1])
    assert s.storage is not None
    storage = s.storage

    def work() -> list[str]:
        from dovetail.storage.names import pattern_regex

        rx = pattern_regex(reference, pattern)
        return [n for n in storage.list_subscribed("*") if rx.match(n)]

    for name in await asyncio.to_thread(work):
        s.write(b'* LSUB () "/" ' + mailbox_out(s, name))
    return None, "Lsub completed."


async def cmd_status(s: Session, cmd: Any) -> Result:
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


def _status_line(s: Session, name: str, st: dict[str, int], items: list[str]) -> bytes:
    parts = [f"{i} {st[i]}" for i in items if i in st]
    if "DELETED" in items and "DELETED" not in st:
        parts.append(f"DELETED {st.get('DELETED', 0)}")
    return b"* STATUS " + mailbox_out(s, name) + b" (" + " ".join(parts).encode() + b")"


def _word(tok: Token) -> str:
    if not isinstance(tok, Atom):
        raise ParseError("Expected an atom")
    return tok.value.upper()


def _list_string(s: Session, tok: Token) -> str:
    raw = astring(tok)
    if s.utf8:
        return raw.decode("utf-8", "replace")
    text = raw.decode("utf-8", "replace")
    try:
        return decode_mutf7(text)
    except ValueError:
        return text


# -- APPEND -------------------------------------------------------------------------------------------


async def cmd_append(s: Session, cmd: Any) -> Result:
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
    if not data:
        raise CommandError("Can't save a zero byte message.")
    if len(data) > s.limits.max_literal:
        raise CommandError("Message too large", "TOOBIG")
    assert s.storage is not None
    try:
        res = await asyncio.to_thread(s.storage.append, name, data, flags, date)
    except MailboxNotFound as exc:
        raise CommandError("Mailbox doesn't exist: " + name[:100], "TRYCREATE") from exc
    uid = next(iter(res.uid_map.values()))
    return f"APPENDUID {res.uidvalidity} {uid}", "Append completed."


# -- selected-state mailbox commands --------------------------------------------------------------------


async def cmd_check(s: Session, cmd: Any) -> Result:
    if cmd.args:
        raise ParseError("CHECK takes no arguments")
    return None, "Check completed."


async def cmd_close(s: Session, cmd: Any) -> Result:
    if cmd.args:
        raise ParseError(f"{cmd.name} takes no arguments")
    sel = s.selected
    assert sel is not None
    if cmd.name == "CLOSE" and not sel.readonly:
        try:
            await asyncio.to_thread(sel.mailbox.expunge, None)
        except StorageError:
            pass
    await s._unselect()
    return None, f"{cmd.name.capitalize()} completed."


async def cmd_expunge(s: Session, cmd: Any) -> Result:
    sel = s.selected
    assert sel is not None
    uids = None
    if cmd.uid:
        if len(cmd.args) != 1:
            raise ParseError("UID EXPUNGE needs a UID set")
        from dovetail.imap.commands_message import resolve

        uids = resolve(s, cmd.args[0], uid=True)
    elif cmd.args:
        raise ParseError("EXPUNGE takes no arguments")
    if sel.readonly:
        raise CommandError("Mailbox is read-only.", "READ-ONLY")
    await asyncio.to_thread(sel.mailbox.expunge, uids)
    code = None
    if s.condstore:
        await s._updates(cmd)
        code = f"HIGHESTMODSEQ {sel.mailbox.highestmodseq}"
    return code, "Expunge completed."


COMMANDS = {
    "SELECT": (cmd_select, AUTH),
    "EXAMINE": (cmd_select, AUTH),
    "CREATE": (cmd_create, AUTH),
    "DELETE": (cmd_delete, AUTH),
    "RENAME": (cmd_rename, AUTH),
    "SUBSCRIBE": (cmd_subscribe, AUTH),
    "UNSUBSCRIBE": (cmd_subscribe, AUTH),
    "LIST": (cmd_list, AUTH),
    "LSUB": (cmd_lsub, AUTH),
    "STATUS": (cmd_status, AUTH),
    "APPEND": (cmd_append, AUTH),
    "CHECK": (cmd_check, SEL),
    "CLOSE": (cmd_close, SEL),
    "UNSELECT": (cmd_close, SEL),
    "EXPUNGE": (cmd_expunge, SEL),
}
