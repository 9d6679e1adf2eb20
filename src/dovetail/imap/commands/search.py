"""SEARCH, SORT and THREAD (and their UID forms) over the selected view.

Keys the index decides run over its facts (:func:`dovetail.imap.search.compile_facts`); the rest over
:class:`~.search_messages.SearchMessage` objects, one probe moved along the view and kept only on a
match. SEARCH hands on plain ``(seq, uid, modseq)`` tuples; SORT and THREAD get the messages.
"""

from __future__ import annotations

import asyncio
from operator import itemgetter
from typing import Any, NamedTuple

from dovetail.imap import search as sm
from dovetail.imap import sort as so
from dovetail.imap import thread as th
from dovetail.imap.commands import search_context
from dovetail.imap.commands.context import CommandSession, CommandTable, Result
from dovetail.imap.commands.search_messages import HeaderBlocks, SearchMessage
from dovetail.imap.state import SEL, CommandError
from dovetail.storage.api import Mailbox


class SearchHit(NamedTuple):
    """What SEARCH reports of a match (SORT and THREAD need the whole :class:`SearchMessage`); made
    only for ESEARCH options and MODSEQ, the matches travel as plain tuples."""

    seq: int
    uid: int
    modseq: int


_UID = itemgetter(0)


def _matching(mb: Mailbox, key: Any, saved: frozenset[int] | None, uid: bool,
              hits: bool = False) -> list[Any]:
    """The view's messages that match ``key``, in sequence order (with ``hits``: as (seq, uid, modseq)
    tuples). Keys the index decides run over its facts; otherwise one probe object is moved over
    them and only a match is kept, so a search builds objects for what it finds, not for every
    message."""
    uids = mb.uids
    ctx = sm.SearchContext(uid=uid, saved=saved, max_seq=len(uids), max_uid=uids[-1] if uids else None)
    facts = mb.message_facts()
    if len(facts) == len(uids) and list(map(_UID, facts)) == (uids if isinstance(uids, list) else list(uids)):
        numbered: Any = enumerate(facts, 1)
    else:
        seq_of = {u: i for i, u in enumerate(uids, 1)}
        numbered = [(seq_of[f[0]], f) for f in facts if f[0] in seq_of]
    blocks = HeaderBlocks(mb)
    fast = sm.compile_facts(key, ctx, blocks.values)
    if fast is not None:
        if hits:
            return [(seq, f[0], f[4]) for seq, f in numbered if fast(seq, f)]
        return [SearchMessage(mb, seq, f, blocks) for seq, f in numbered if fast(seq, f)]
    pred = sm.compile_key(key, (), ctx)
    out: list[SearchMessage] = []
    probe: SearchMessage | None = None
    for seq, f in numbered:
        if probe is None:
            probe = SearchMessage(mb, seq, f, blocks)
        else:
            probe.reset(seq, f)
        if pred(probe):
            out.append(probe)
            probe = None
    if hits:
        return [(m.seq, m.uid, m.modseq) for m in out]
    return out


def matching_uids(mb: Mailbox, key: Any, saved: frozenset[int] | None, uid: bool) -> list[int]:
    """UIDs of the view's messages that match ``key`` (a live search's result)."""
    return [t[1] for t in _matching(mb, key, saved, uid, hits=True)]


def _search_error(exc: Exception) -> CommandError:
    return CommandError(getattr(exc, "text", str(exc)), getattr(exc, "code", None),
                        getattr(exc, "status", "BAD"))


async def cmd_search(s: CommandSession, cmd: Any) -> Result:
    sel = s.selected
    assert sel is not None
    try:
        req = sm.parse_search(cmd.args)
    except sm.SearchError as exc:
        raise _search_error(exc) from exc
    if req.uses_modseq:
        s.enable_condstore()
    mb = sel.mailbox
    saved = sel.saved

    def work() -> list[Any]:
        return _matching(mb, req.key, saved, cmd.uid, hits=True)

    try:
        if req.returns is not None and "UPDATE" in req.returns:  # adds a context: see work_then_refresh
            found = await asyncio.to_thread(work)
        else:
            found = await s.work_then_refresh(cmd, work)
    except sm.SearchError as exc:
        raise _search_error(exc) from exc
    # (seq, uid, modseq) tuples in sequence order: most searches need just the numbers.
    nums = [t[1] for t in found] if cmd.uid else [t[0] for t in found]
    returns = req.returns
    if returns is not None or req.uses_modseq:
        found = [SearchHit._make(t) for t in found]
    if returns is not None and "SAVE" in returns:
        sel.saved = sm.saved_result(found, returns)
    if returns is not None and "UPDATE" in returns:
        key, uid = req.key, cmd.uid
        search_context.start(s, cmd.tag, lambda: matching_uids(mb, key, sel.saved, uid), cmd.uid,
                             [t.uid for t in found])
    modseq = None
    if req.uses_modseq:
        modseq = sm.highest_modseq(sm.reported(found, returns))
    if returns is not None or s.rev2:
        line = sm.format_esearch(cmd.tag, cmd.uid, nums, returns or {"ALL"}, modseq, partial=req.partial)
        if line is not None:
            s.write(line)
    else:
        s.write(sm.format_search(nums, modseq))
    return None, "Search completed."


async def cmd_sort(s: CommandSession, cmd: Any) -> Result:
    sel = s.selected
    assert sel is not None
    try:
        req = so.parse_sort(cmd.args)
    except sm.SearchError as exc:
        raise _search_error(exc) from exc
    mb = sel.mailbox
    saved = sel.saved

    def work() -> list[int]:
        return so.sort(req.criteria, _matching(mb, req.key, saved, cmd.uid), uid=cmd.uid)

    try:
        nums = await asyncio.to_thread(work)
    except sm.SearchError as exc:
        raise _search_error(exc) from exc
    if req.returns is not None and "UPDATE" in req.returns:
        s.write(f'* OK [NOUPDATE "{cmd.tag}"] Sorted results are not kept up to date')
    if req.returns is not None:  # ESORT (RFC 5267): an ESEARCH response in sort order
        line = sm.format_esearch(cmd.tag, cmd.uid, nums, req.returns, partial=req.partial, ordered=True)
        if line is not None:
            s.write(line)
    else:
        s.write(so.format_sort(nums))
    return None, "Sort completed."


async def cmd_thread(s: CommandSession, cmd: Any) -> Result:
    sel = s.selected
    assert sel is not None
    try:
        req = th.parse_thread(cmd.args)
    except sm.SearchError as exc:
        raise _search_error(exc) from exc
    mb = sel.mailbox
    saved = sel.saved

    def work() -> str:
        return th.format_thread(th.thread(req.algorithm, _matching(mb, req.key, saved, cmd.uid), uid=cmd.uid))

    try:
        line = await asyncio.to_thread(work)
    except sm.SearchError as exc:
        raise _search_error(exc) from exc
    s.write(line)
    return None, "Thread completed."


COMMANDS: CommandTable = {
    "SEARCH": (cmd_search, SEL),
    "SORT": (cmd_sort, SEL),
    "THREAD": (cmd_thread, SEL),
}
