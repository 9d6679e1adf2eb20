"""CONTEXT=SEARCH (RFC 5267): searches that stay live. ``SEARCH RETURN (UPDATE ...)`` keeps its key
and result; after each command the session tells the client what joined (``ADDTO``) or left
(``REMOVEFROM``) the result, until ``CANCELUPDATE`` or another mailbox is selected.

The result is kept as UIDs. A message that is expunged is reported as removed before its EXPUNGE
response, while its sequence number still means it; the rest is found by searching again after the
command's own changes, so flag changes by this session, by others and new mail are all seen. Results
of unsorted searches have no order, so every ADDTO and REMOVEFROM names position 0.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dovetail.imap.commands.context import CommandSession, CommandTable, Result
from dovetail.imap.sequence import format_set
from dovetail.imap.state import SEL, CommandError, Selected
from dovetail.imap.tokens import Atom, ParseError, String
from dovetail.storage.api import Changes

MAX_CONTEXTS = 10  # live searches per session; more get NOUPDATE


@dataclass
class LiveSearch:
    find: Callable[[], list[int]]  # searches the view again: the UIDs that match now (worker thread)
    uid: bool
    uids: set[int] = field(default_factory=set)


def contexts_of(sel: Selected) -> dict[str, LiveSearch]:
    """The live searches of the selected mailbox (they end with it)."""
    return sel.contexts


def start(s: CommandSession, tag: str, find: Callable[[], list[int]], uid: bool, uids: list[int]) -> bool:
    """Keep a search live; False (and an untagged ``OK [NOUPDATE]``) when this session has too many."""
    assert s.selected is not None
    live = contexts_of(s.selected)
    if tag not in live and len(live) >= MAX_CONTEXTS:
        s.write(f'* OK [NOUPDATE "{_quoted(tag)}"] Too many live searches')
        return False
    live[tag] = LiveSearch(find, uid, set(uids))
    return True


def before_expunges(s: CommandSession, old_uids: list[int], changes: Changes) -> None:
    """REMOVEFROM for expunged messages, numbered as the client still numbers them."""
    sel = s.selected
    if sel is None or not changes.expunged_uids:
        return
    live = contexts_of(sel)
    if not live:
        return
    gone = set(changes.expunged_uids)
    position = {u: i for i, u in enumerate(old_uids, 1)} if any(not c.uid for c in live.values()) else {}
    for tag, ctx in live.items():
        removed = ctx.uids & gone
        if not removed:
            continue
        ctx.uids -= removed
        nums = removed if ctx.uid else {position[u] for u in removed if u in position}
        if nums:
            s.write(_line(tag, ctx.uid, "REMOVEFROM", nums))


async def after_command(s: CommandSession) -> None:
    """Search each live context again and report what joined or left it."""
    sel = s.selected
    if sel is None:
        return
    live = contexts_of(sel)
    if not live:
        return
    mb = sel.mailbox

    def work() -> list[tuple[str, LiveSearch, set[int]]]:
        return [(tag, ctx, set(ctx.find())) for tag, ctx in live.items()]

    for tag, ctx, now in await asyncio.to_thread(work):
        removed, added = ctx.uids - now, now - ctx.uids
        ctx.uids = now
        for word, uids in (("REMOVEFROM", removed), ("ADDTO", added)):
            if not uids:
                continue
            nums = uids if ctx.uid else {q for q in (mb.seq_of(u) for u in uids) if q is not None}
            if nums:
                s.write(_line(tag, ctx.uid, word, nums))


def _line(tag: str, uid: bool, word: str, nums: set[int]) -> str:
    return f'* ESEARCH (TAG "{_quoted(tag)}")' + (" UID" if uid else "") + f" {word} (0 {format_set(nums)})"


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


async def cmd_cancelupdate(s: CommandSession, cmd: Any) -> Result:
    if not cmd.args:
        raise ParseError("CANCELUPDATE needs the tags of live searches")
    assert s.selected is not None
    live = contexts_of(s.selected)
    tags = []
    for tok in cmd.args:
        if not isinstance(tok, String | Atom):
            raise ParseError("CANCELUPDATE takes search tags as strings")
        tags.append(tok.value.decode("utf-8", "replace") if isinstance(tok, String) else tok.value)
    unknown = [t for t in tags if t not in live]
    if unknown:
        raise CommandError(f"No live search with tag {unknown[0][:40]!r}", status="BAD")
    for t in tags:
        del live[t]
    return None, "Cancelupdate completed."


COMMANDS: CommandTable = {"CANCELUPDATE": (cmd_cancelupdate, SEL)}
