"""FETCH and UID FETCH (with CONDSTORE's CHANGEDSINCE and QRESYNC's VANISHED).

The item builders are chosen once per command (see :mod:`.fetch_items`); the storage work and the
response lines are made in one worker-thread call (the refresh after it in the same call), so the
event loop only writes bytes.
"""

from __future__ import annotations

import bisect
import operator
from collections.abc import Sequence
from typing import Any

from dovetail.imap.commands.arguments import resolve
from dovetail.imap.commands.context import CommandSession, CommandTable, Result
from dovetail.imap.commands.fetch_items import item_builder
from dovetail.imap.fetchatt import FetchAtt, parse_fetch_atts
from dovetail.imap.sequence import SequenceSet, format_set, missing_ranges
from dovetail.imap.state import SEL
from dovetail.imap.tokens import Atom, ListToken, ParseError, number
from dovetail.storage.api import SEEN, Mailbox, MessageExpunged, NotInMemory, StoreMode


async def cmd_fetch(s: CommandSession, cmd: Any) -> Result:
    sel = s.selected
    assert sel is not None
    if len(cmd.args) not in (2, 3):
        raise ParseError("FETCH needs a sequence set and attributes")
    uids = resolve(s, cmd.args[0], cmd.uid)
    atts = parse_fetch_atts(cmd.args[1])
    changedsince = None
    vanished = False
    if len(cmd.args) == 3:
        mods = cmd.args[2]
        if not isinstance(mods, ListToken):
            raise ParseError("Invalid FETCH modifiers")
        items = list(mods.items)
        while items:
            key = items.pop(0)
            name = key.value.upper() if isinstance(key, Atom) else ""
            if name == "CHANGEDSINCE" and items:
                changedsince = number(items.pop(0), bits=63)
            elif name == "VANISHED" and cmd.uid and s.qresync:
                vanished = True
            else:
                raise ParseError("Invalid FETCH modifier")
        if vanished and changedsince is None:
            raise ParseError("VANISHED needs CHANGEDSINCE")
    if cmd.uid and not any(a.name == "UID" for a in atts):
        atts.insert(0, FetchAtt("UID"))
    if changedsince is not None or any(a.name == "MODSEQ" for a in atts):
        s.enable_condstore()
        if not any(a.name == "MODSEQ" for a in atts):
            atts.append(FetchAtt("MODSEQ"))
    mb = sel.mailbox
    set_seen = not sel.readonly and any(a.sets_seen for a in atts)

    def work() -> tuple[list[bytes], bool, str]:
        wanted = uids
        gone = ""
        if changedsince is not None:
            changed = set(mb.changed_since(changedsince))
            wanted = [u for u in uids if u in changed]
            if vanished:
                exp = mb.expunged_since(changedsince)
                ss = SequenceSet.parse(cmd.args[0].value) if not cmd.args[0].value == "$" else None
                star = max(mb.uidnext - 1, 1)
                if exp is None:  # the history does not reach back: every UID we cannot vouch for
                    gone = missing_ranges(ss, list(mb.uids), star)
                else:
                    gone = format_set(u for u in exp if ss is None or ss.contains(u, star))
        lines, missing = _fetch(s, mb, wanted, atts, set_seen)
        return lines, missing, gone

    done = _from_memory(s, mb, uids, atts) if changedsince is None and not set_seen else None
    if done is not None:
        lines, missing = done
        gone = ""
    else:
        lines, missing, gone = await s.work_then_refresh(cmd, work)
    s.announce_keywords()
    if gone:
        s.write(f"* VANISHED (EARLIER) {gone}")
    if lines:
        s.write(b"\r\n".join(lines))  # one write for the lot: a FETCH 1:* has thousands
    if missing:
        # Dovecot's answer: the messages still there were fetched, so the command succeeded.
        return "EXPUNGEISSUED", "Some messages were already expunged."
    return None, "Fetch completed."


MEMORY_FETCH_MAX = 256
"""At most this many messages are fetched on the event loop (see :func:`_from_memory`): a FETCH 1:* of a
large folder goes to the storage thread, so the loop keeps serving the other sessions meanwhile."""


def _from_memory(s: CommandSession, mb: Mailbox, uids: Sequence[int],
                 atts: list[FetchAtt]) -> tuple[list[bytes], bool] | None:
    """The FETCH answered on the event loop when everything it needs is in memory and nothing changed
    since the last refresh (:meth:`Mailbox.memory_reads`): a FETCH of a message or a page of them costs
    no thread hop. None when it is not (a cache miss halfway throws the lines away): the caller runs
    the FETCH in the storage thread as any other."""
    if len(uids) > MEMORY_FETCH_MAX:
        return None
    scope = mb.memory_reads(fast=True)
    if scope is None:
        return None
    try:
        with scope as quiet:
            done = _fetch(s, mb, uids, atts, False)
    except NotInMemory:
        return None
    s.note_refreshed(quiet)
    return done


def fetch_lines(s: CommandSession, mb: Mailbox, uids: Sequence[int], names: Sequence[str | FetchAtt]) -> list[bytes]:
    """FETCH response lines for ``uids`` (QRESYNC SELECT, NOTIFY's MessageNew); runs in a worker thread.
    Body sections are fetched as PEEK: no FETCH the client did not send sets \\Seen."""
    atts = [n if isinstance(n, FetchAtt) else FetchAtt(n) for n in names]
    lines, _missing = _fetch(s, mb, uids, atts, False)
    return lines


_ROW_ITEMS = {"UID": b"UID %d", "FLAGS": b"FLAGS %s", "MODSEQ": b"MODSEQ (%d)", "RFC822.SIZE": b"RFC822.SIZE %d"}
_ROW_FIELDS = {"UID": 1, "FLAGS": 2, "MODSEQ": 3, "RFC822.SIZE": 4}  # in (seq, uid, flags, modseq, size)


def _fetch(s: CommandSession, mb: Mailbox, uids: Sequence[int], atts: list[FetchAtt],
           set_seen: bool) -> tuple[list[bytes], bool]:
    if not uids:
        return [], False
    if not set_seen and all(a.name in _ROW_ITEMS for a in atts):
        return _fetch_rows(s, mb, uids, atts)
    want_env = any(a.name == "ENVELOPE" for a in atts)
    want_bs = any(a.name in ("BODYSTRUCTURE", "BODY", "BINARY", "BINARY.SIZE") and
                  (a.section is None or a.name != "BODY") for a in atts)
    # ENVELOPE/BODY/BODYSTRUCTURE go out as the IMAP bytes the index keeps; only BINARY of a part
    # needs the structure as data (to find the part's transfer encoding).
    raw = not any(a.name in ("BINARY", "BINARY.SIZE") and a.section is not None and a.section.part for a in atts)
    dates = any(a.name == "INTERNALDATE" for a in atts)
    infos = mb.fetch_info(uids, envelope=want_env, bodystructure=want_bs, raw=raw, dates=dates)
    seen_now: set[int] = set()
    if set_seen:
        unseen = [i.uid for i in infos if SEEN not in i.flags]
        if unseen:
            mb.store_flags(unseen, StoreMode.ADD, [SEEN])
            seen_now = set(unseen)
            infos = mb.fetch_info(uids, envelope=want_env, bodystructure=want_bs, raw=raw, dates=dates)
    lines: list[bytes] = []
    missing = len(infos) < len(uids)
    has_flags = any(a.name == "FLAGS" for a in atts)
    builders = [item_builder(s, mb, att) for att in atts]
    # The infos come in UID order, as the view's UIDs are: each sequence number is looked for from the
    # previous one on, without a method call per message.
    view = mb.uids
    n = len(view)
    at = 0
    for info in infos:
        uid = info.uid
        at = bisect.bisect_left(view, uid, at)
        if at == n or view[at] != uid:
            continue
        try:
            items = [build(info) for build in builders]
        except MessageExpunged:
            missing = True
            continue
        if uid in seen_now and not has_flags:
            items.append(b"FLAGS " + s.flags_out(info.flags, info.recent))
        lines.append(b"* %d FETCH (" % (at + 1) + b" ".join(items) + b")")
    return lines, missing


def _fetch_rows(s: CommandSession, mb: Mailbox, uids: Sequence[int], atts: list[FetchAtt]) -> tuple[list[bytes], bool]:
    """A FETCH of only UID, FLAGS, MODSEQ and RFC822.SIZE (``UID FETCH 1:* (FLAGS)``, what a client
    syncs with): one line format for the command and one ``%`` per message, from the store's rows."""
    rows = mb.flag_rows(uids)
    fmt = b"* %d FETCH (" + b" ".join(_ROW_ITEMS[a.name] for a in atts) + b")"
    pick = operator.itemgetter(0, *(_ROW_FIELDS[a.name] for a in atts))
    want_flags = any(a.name == "FLAGS" for a in atts)
    flags_out = s.flags_out
    seq_of = mb.seq_of
    lines = []
    for uid, flags, recent, modseq, size in rows:
        seq = seq_of(uid)
        if seq is not None:
            lines.append(fmt % pick((seq, uid, flags_out(flags, recent) if want_flags else b"", modseq, size)))
    return lines, len(rows) < len(uids)


COMMANDS: CommandTable = {"FETCH": (cmd_fetch, SEL)}
