"""NOTIFY (RFC 5465): which mailboxes a session hears about without asking.

``NOTIFY SET [STATUS] (filter (events)) ...`` names mailboxes (SELECTED, SELECTED-DELAYED, INBOXES,
PERSONAL, SUBSCRIBED, SUBTREE, MAILBOXES) and events (MessageNew, MessageExpunge, FlagChange,
MailboxName, SubscriptionChange). For the selected mailbox the session already reports everything;
NOTIFY adds the FETCH items a client wants for new messages and lets it turn FlagChange off. For the
other mailboxes the session compares a snapshot (STATUS values, mailbox names, subscriptions) after
each command and every couple of seconds of IDLE, and sends ``* STATUS`` and ``* LIST`` for what
moved, the way Dovecot's NOTIFY does on top of its own mailbox watching. Annotation and metadata
events are refused with ``BADEVENT`` (no METADATA here).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from dovetail.imap.commands.arguments import mailbox_arg, mailbox_out
from dovetail.imap.commands.context import CommandSession, CommandTable, Result
from dovetail.imap.fetchatt import FetchAtt, parse_fetch_atts
from dovetail.imap.state import AUTH, CommandError
from dovetail.imap.tokens import Atom, ListToken, ParseError, Token
from dovetail.storage.api import MailStorage, StorageError

SUPPORTED = ("MessageNew", "MessageExpunge", "FlagChange", "MailboxName", "SubscriptionChange")
_KNOWN = {e.upper(): e for e in (*SUPPORTED, "AnnotationChange", "MailboxMetadataChange", "ServerMetadataChange")}
_OTHER_FILTERS = {"INBOXES", "PERSONAL", "SUBSCRIBED", "SUBTREE", "MAILBOXES"}
MAX_WATCHED = 1000  # mailboxes one session's NOTIFY may watch
POLL_SECONDS = 2.0  # how often an idle session looks at the other mailboxes


@dataclass
class Watch:
    """One event group: which mailboxes, which events."""

    kind: str  # SELECTED, SELECTED-DELAYED, INBOXES, PERSONAL, SUBSCRIBED, SUBTREE, MAILBOXES
    names: tuple[str, ...] = ()
    events: frozenset[str] = frozenset()
    fetch: tuple[FetchAtt, ...] = ()


@dataclass
class NotifySpec:
    watches: list[Watch]
    status: dict[str, tuple[int, ...]] = field(default_factory=dict)  # last STATUS sent per mailbox
    names: frozenset[str] | None = None  # mailboxes last seen (MailboxName)
    subscribed: frozenset[str] | None = None  # subscriptions last seen (SubscriptionChange)

    @property
    def selected(self) -> Watch | None:
        return next((w for w in self.watches if w.kind in ("SELECTED", "SELECTED-DELAYED")), None)

    @property
    def others(self) -> list[Watch]:
        return [w for w in self.watches if w.kind in _OTHER_FILTERS]


def _word(tok: Token) -> str:
    if not isinstance(tok, Atom):
        raise ParseError("NOTIFY expects an atom here")
    return tok.value.upper()


def parse_notify(s: CommandSession, args: tuple[Token, ...]) -> tuple[NotifySpec | None, bool]:
    """``NONE`` or ``SET [STATUS] groups`` -> (spec or None for NONE, whether STATUS was asked)."""
    items = list(args)
    if not items:
        raise ParseError("NOTIFY needs SET or NONE")
    head = _word(items.pop(0))
    if head == "NONE":
        if items:
            raise ParseError("NOTIFY NONE takes no arguments")
        return None, False
    if head != "SET":
        raise ParseError("NOTIFY needs SET or NONE")
    status = False
    if items and isinstance(items[0], Atom) and items[0].value.upper() == "STATUS":
        items.pop(0)
        status = True
    if not items:
        raise ParseError("NOTIFY SET needs event groups")
    watches = [_group(s, g) for g in items]
    kinds = [w.kind for w in watches]
    if sum(k in ("SELECTED", "SELECTED-DELAYED") for k in kinds) > 1:
        raise ParseError("SELECTED may be given once")
    return NotifySpec(watches), status


def _group(s: CommandSession, tok: Token) -> Watch:
    if not isinstance(tok, ListToken) or len(tok.items) < 2:
        raise ParseError("An event group is (mailboxes events)")
    parts = list(tok.items)
    kind = _word(parts.pop(0))
    names: tuple[str, ...] = ()
    if kind in ("SUBTREE", "MAILBOXES"):
        if not parts:
            raise ParseError(f"{kind} needs mailbox names")
        boxes = parts.pop(0)
        toks = boxes.items if isinstance(boxes, ListToken) else (boxes,)
        if not toks:
            raise ParseError(f"{kind} needs mailbox names")
        names = tuple(mailbox_arg(s, t) for t in toks)
    elif kind not in ("SELECTED", "SELECTED-DELAYED", "INBOXES", "PERSONAL", "SUBSCRIBED"):
        raise ParseError("Unknown NOTIFY mailbox filter")
    if len(parts) != 1:
        raise ParseError("An event group ends with its events")
    events_tok = parts[0]
    if isinstance(events_tok, Atom) and events_tok.value.upper() == "NONE":
        return Watch(kind, names)
    if not isinstance(events_tok, ListToken) or not events_tok.items:
        raise ParseError("Events are a parenthesised list or NONE")
    events: set[str] = set()
    fetch: tuple[FetchAtt, ...] = ()
    evs = list(events_tok.items)
    while evs:
        name = _word(evs.pop(0))
        event = _KNOWN.get(name)
        if event is None or event not in SUPPORTED:
            raise CommandError("Unsupported NOTIFY event.", "BADEVENT (" + " ".join(SUPPORTED) + ")")
        events.add(event)
        if event == "MessageNew" and evs and isinstance(evs[0], ListToken):
            if kind not in ("SELECTED", "SELECTED-DELAYED"):
                raise ParseError("FETCH items for MessageNew only for the selected mailbox")
            fetch = tuple(parse_fetch_atts(evs.pop(0)))
    if kind in ("SELECTED", "SELECTED-DELAYED") and events & {"MailboxName", "SubscriptionChange"}:
        raise ParseError("Mailbox events are not for the selected mailbox")
    return Watch(kind, names, frozenset(events), fetch)


def _status_items(events: frozenset[str]) -> tuple[str, ...]:
    """STATUS items that tell of ``events`` (RFC 5465 §5.1), in Dovecot's order."""
    wanted = []
    if events & {"MessageNew", "MessageExpunge"}:
        wanted.append("MESSAGES")
    if "MessageNew" in events:
        wanted += ["UIDNEXT", "UIDVALIDITY"]
    if "FlagChange" in events:
        wanted += [i for i in ("UIDVALIDITY", "HIGHESTMODSEQ") if i not in wanted]
    return tuple(wanted)


def watched(storage: MailStorage, spec: NotifySpec, selected: str | None) -> dict[str, frozenset[str]]:
    """Mailboxes (other than the selected one) the spec's filters name, with their events."""
    out: dict[str, set[str]] = {}
    groups = spec.others
    if not groups:
        return {}
    all_names = [i.name for i in storage.list_mailboxes("", "*") if "\\Noselect" not in i.attributes]
    subscribed = set(storage.list_subscribed("*")) if any(w.kind == "SUBSCRIBED" for w in groups) else set()
    for w in groups:
        if w.kind == "INBOXES":
            names = ["INBOX"]
        elif w.kind == "PERSONAL":
            names = all_names
        elif w.kind == "SUBSCRIBED":
            names = [n for n in all_names if n in subscribed]
        elif w.kind == "SUBTREE":
            names = [n for n in all_names if any(n == r or n.startswith(r + "/") for r in w.names)]
        else:
            names = [n for n in all_names if n in w.names]
        for n in names[:MAX_WATCHED]:
            out.setdefault(n, set()).update(w.events)
    out.pop(selected or "", None)
    return {n: frozenset(e) for n, e in out.items()}


def _status_line(s: CommandSession, name: str, items: tuple[str, ...], values: dict[str, int]) -> bytes:
    body = " ".join(f"{i} {values[i]}" for i in items if i in values)
    return b"* STATUS " + mailbox_out(s, name) + b" (" + body.encode() + b")"


def _statuses(storage: MailStorage, spec: NotifySpec, selected: str | None
              ) -> list[tuple[str, tuple[str, ...], dict[str, int]]]:
    """(mailbox, STATUS items its events call for, their values) for each watched mailbox."""
    out = []
    for name, events in watched(storage, spec, selected).items():
        items = _status_items(events)
        if not items:
            continue
        try:
            out.append((name, items, storage.status(name, items)))
        except (StorageError, ValueError):
            continue
    return out


def snapshot(storage: MailStorage, spec: NotifySpec, selected: str | None, initial: bool
             ) -> list[tuple[str, Any]]:
    """What changed in the watched mailboxes since the last look: ("status", (name, items, values)),
    ("list", line parts). The first look (``initial``) records the state and reports nothing but
    what NOTIFY SET STATUS asks for, which the caller decides."""
    out: list[tuple[str, Any]] = []
    for name, items, values in _statuses(storage, spec, selected):
        key = tuple(values[i] for i in items)
        if spec.status.get(name) != key:
            if not initial:
                out.append(("status", (name, items, values)))
            spec.status[name] = key
    wants = set().union(*(w.events for w in spec.others)) if spec.others else set()
    if "MailboxName" in wants:
        names = frozenset(i.name for i in storage.list_mailboxes("", "*"))
        if spec.names is not None and not initial:
            for n in sorted(names - spec.names):
                out.append(("list", ("", n)))
            for n in sorted(spec.names - names):
                out.append(("list", ("\\NonExistent", n)))
        spec.names = names
    if "SubscriptionChange" in wants:
        subs = frozenset(storage.list_subscribed("*"))
        if spec.subscribed is not None and not initial:
            for n in sorted(subs - spec.subscribed):
                out.append(("list", ("\\Subscribed", n)))
            for n in sorted(spec.subscribed - subs):
                out.append(("list", ("", n)))
        spec.subscribed = subs
    return out


def write_changes(s: CommandSession, changes: list[tuple[str, Any]]) -> None:
    for kind, data in changes:
        if kind == "status":
            name, items, values = data
            s.write(_status_line(s, name, items, values))
        else:
            attrs, name = data
            s.write(b"* LIST (" + attrs.encode() + b') "/" ' + mailbox_out(s, name))


async def cmd_notify(s: CommandSession, cmd: Any) -> Result:
    spec, status = parse_notify(s, cmd.args)
    s.notify = spec
    if spec is None:
        return None, "NOTIFY completed."
    assert s.storage is not None
    storage = s.storage
    selected = s.selected.mailbox.name if s.selected is not None else None

    def first_look() -> list[bytes]:
        snapshot(storage, spec, selected, initial=True)
        if not status:
            return []
        return [_status_line(s, name, items, values) for name, items, values in _statuses(storage, spec, selected)]

    for line in await asyncio.to_thread(first_look):
        s.write(line)
    return None, "NOTIFY completed."


async def report(s: CommandSession) -> None:
    """After a command or an IDLE wake-up: tell of changes in the other watched mailboxes."""
    spec = s.notify
    if spec is None or not spec.others or s.storage is None:
        return
    storage = s.storage
    selected = s.selected.mailbox.name if s.selected is not None else None
    changes = await asyncio.to_thread(snapshot, storage, spec, selected, False)
    write_changes(s, changes)


COMMANDS: CommandTable = {"NOTIFY": (cmd_notify, AUTH)}
