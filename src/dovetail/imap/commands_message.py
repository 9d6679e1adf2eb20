"""Message-level commands: FETCH, STORE, COPY, MOVE, SEARCH, SORT, THREAD (and their UID forms).

The storage work of one command runs in one ``asyncio.to_thread`` call; response lines are built
there too, so the event loop only writes bytes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email
import email.policy
import functools
import itertools
import quopri
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from dovetail.imap.commands_mailbox import mailbox_arg, parse_flags
from dovetail.imap.fetchatt import FetchAtt, parse_fetch_atts
from dovetail.imap.parser import Atom, ListToken, ParseError, Token, number
from dovetail.imap.response import imap_date, literal
from dovetail.imap.sequence import SequenceSet, format_set
from dovetail.imap.state import SEL, CommandError
from dovetail.storage.api import (
    RECENT,
    SEEN,
    Mailbox,
    MailboxNotFound,
    MessageExpunged,
    MessageInfo,
    StoreMode,
)
from dovetail.storage.api import Section as StoreSection

if TYPE_CHECKING:
    from dovetail.imap.session import Session

Result = tuple[str | None, str]


# -- sequence sets --------------------------------------------------------------------------------------


def resolve(s: Session, tok: Token, uid: bool) -> list[int]:
    """A sequence set (or ``$``) as the UIDs of the selected view, ascending."""
    sel = s.selected
    assert sel is not None
    if not isinstance(tok, Atom):
        raise ParseError("Expected a sequence set")
    ss = SequenceSet.parse(tok.value)
    uids = sel.mailbox.uids
    if ss.saved:
        saved = sel.saved or frozenset()
        return sorted(u for u in uids if u in saved)
    if uid:
        return ss.select(list(uids))
    n = len(uids)
    out: set[int] = set()
    if n == 0 and any(lo is None or hi is None for lo, hi in ss.ranges):
        return []  # "1:*" in an empty mailbox names nothing; clients send it blindly
    for lo, hi in ss.ranges:
        for v in (lo, hi):
            if v is not None and v > n:
                raise CommandError("Invalid messageset", status="BAD")
    for a, b in ss.bounds(n):
        out.update(uids[i - 1] for i in range(max(a, 1), min(b, n) + 1))
    return sorted(out)


# -- FETCH ----------------------------------------------------------------------------------------------


async def cmd_fetch(s: Session, cmd: Any) -> Result:
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
        s.enabled.add("CONDSTORE")
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
                from dovetail.imap.commands_mailbox import missing_ranges

                exp = mb.expunged_since(changedsince)
                ss = SequenceSet.parse(cmd.args[0].value) if not cmd.args[0].value == "$" else None
                star = max(mb.uidnext - 1, 1)
                if exp is None:  # the history does not reach back: every UID we cannot vouch for
                    gone = missing_ranges(ss, list(mb.uids), star)
                else:
                    gone = format_set(u for u in exp if ss is None or ss.contains(u, star))
        lines, missing = _fetch(s, mb, wanted, atts, set_seen)
        return lines, missing, gone

    lines, missing, gone = await asyncio.to_thread(work)
    if gone:
        s.write(f"* VANISHED (EARLIER) {gone}")
    for line in lines:
        s.write(line)
    if missing:
        raise CommandError("Some messages were expunged before they could be fetched.", "EXPUNGEISSUED")
    return None, "Fetch completed."


def fetch_lines(s: Session, mb: Mailbox, uids: Sequence[int], names: Sequence[str]) -> list[bytes]:
    """FETCH response lines for simple items (QRESYNC SELECT uses this); runs in a worker thread."""
    lines, _missing = _fetch(s, mb, uids, [FetchAtt(n) for n in names], False)
    return lines


def _fetch(s: Session, mb: Mailbox, uids: Sequence[int], atts: list[FetchAtt],
           set_seen: bool) -> tuple[list[bytes], bool]:
    if not uids:
        return [], False
    want_env = any(a.name == "ENVELOPE" for a in atts)
    want_bs = any(a.name in ("BODYSTRUCTURE", "BODY", "BINARY", "BINARY.SIZE") and
                  (a.section is None or a.name != "BODY") for a in atts)
    # ENVELOPE/BODY/BODYSTRUCTURE go out as the IMAP bytes the index keeps; only BINARY of a part
    # needs the structure as data (to find the part's transfer encoding).
    raw = not any(a.name in ("BINARY", "BINARY.SIZE") and a.section is not None and a.section.part for a in atts)
    infos = mb.fetch_info(uids, envelope=want_env, bodystructure=want_bs, raw=raw)
    seen_now: set[int] = set()
    if set_seen:
        unseen = [i.uid for i in infos if SEEN not in i.flags]
        if unseen:
            mb.store_flags(unseen, StoreMode.ADD, [SEEN])
            seen_now = set(unseen)
            infos = mb.fetch_info(uids, envelope=want_env, bodystructure=want_bs, raw=raw)
    lines: list[bytes] = []
    missing = len(infos) < len(uids)
    has_flags = any(a.name == "FLAGS" for a in atts)
    builders = [_builder(s, mb, att) for att in atts]
    seq_of = mb.seq_of
    for info in infos:
        seq = seq_of(info.uid)
        if seq is None:
            continue
        try:
            items = [build(info) for build in builders]
        except MessageExpunged:
            missing = True
            continue
        if info.uid in seen_now and not has_flags:
            items.append(b"FLAGS " + s.flags_out(info.flags, info.recent))
        lines.append(b"* %d FETCH (" % seq + b" ".join(items) + b")")
    return lines, missing


def _builder(s: Session, mb: Mailbox, att: FetchAtt) -> Any:
    """The item of ``att`` for one message, as a function chosen once per FETCH (a FETCH 1:* calls it
    for every message); the items the index answers have their own, the rest go through _item."""
    name = att.name
    if name == "UID":
        return lambda info: b"UID %d" % info.uid
    if name == "FLAGS":
        flags_out = s.flags_out
        return lambda info: b"FLAGS " + flags_out(info.flags, info.recent)
    if name == "RFC822.SIZE":
        return lambda info: b"RFC822.SIZE %d" % info.size
    if name == "MODSEQ":
        return lambda info: b"MODSEQ (%d)" % info.modseq
    if name == "ENVELOPE":
        return lambda info: (b"ENVELOPE " + info.envelope_imap if info.envelope_imap is not None
                             else _item(s, mb, info, att))
    return lambda info: _item(s, mb, info, att)


def _envelope(value: Any) -> bytes:
    from dovetail.mime.imapdata import envelope_to_imap

    return b"NIL" if value is None else envelope_to_imap(value)


def _body(value: Any) -> bytes:
    from dovetail.mime.imapdata import body_to_imap

    return b"NIL" if value is None else body_to_imap(value)


def _item(s: Session, mb: Mailbox, info: MessageInfo, att: FetchAtt) -> bytes:
    name = att.name
    if name == "FLAGS":
        return b"FLAGS " + s.flags_out(info.flags, info.recent)
    if name == "UID":
        return b"UID %d" % info.uid
    if name == "INTERNALDATE":
        return b'INTERNALDATE "' + imap_date(info.internal_date).encode() + b'"'
    if name == "RFC822.SIZE":
        return b"RFC822.SIZE %d" % info.size
    if name == "MODSEQ":
        return b"MODSEQ (%d)" % info.modseq
    if name == "ENVELOPE":
        if info.envelope_imap is not None:
            return b"ENVELOPE " + info.envelope_imap
        return b"ENVELOPE " + _envelope(info.envelope)
    if name == "BODYSTRUCTURE":
        if info.bodystructure_imap is not None:
            return b"BODYSTRUCTURE " + info.bodystructure_imap
        return b"BODYSTRUCTURE " + _body(info.bodystructure)
    if name == "BODY" and att.section is None:
        if info.body_imap is not None or info.bodystructure_imap is not None:
            return b"BODY " + (info.body_imap if info.body_imap is not None else info.bodystructure_imap)
        return b"BODY " + _body(info.body if info.body is not None else info.bodystructure)
    if name in ("SAVEDATE", "EMAILID", "THREADID"):
        return name.encode() + b" NIL"
    if name == "RFC822":
        return b"RFC822 " + literal(mb.open_message(info.uid))
    if name == "RFC822.HEADER":
        return b"RFC822.HEADER " + literal(mb.get_section(info.uid, StoreSection((), "HEADER")))
    if name == "RFC822.TEXT":
        return b"RFC822.TEXT " + literal(mb.get_section(info.uid, StoreSection((), "TEXT")))
    sec = att.section
    assert sec is not None
    head = att.response_name().encode()
    if name == "BODY":
        ssec = StoreSection(sec.part, sec.text or None, sec.fields)
        partial = (att.partial[0], att.partial[1] or 0) if att.partial else None
        return head + b" " + literal(mb.get_section(info.uid, ssec, partial))
    data = _binary(mb, info, sec.part)
    if name == "BINARY.SIZE":
        return head + b" %d" % len(data)
    if att.partial:
        start, length = att.partial
        data = data[start : start + (length or 0)]
    return head + b" " + literal(data, binary=b"\x00" in data)


def _binary(mb: Mailbox, info: MessageInfo, part: tuple[int, ...]) -> bytes:
    """BINARY[part]: the part's content with its transfer encoding undone (RFC 3516)."""
    if not part:
        return mb.open_message(info.uid)
    structure = _structure_of(info.bodystructure, part)
    if structure is None:
        return b""
    raw = mb.get_section(info.uid, StoreSection(part, None, ()))
    if isinstance(structure[0], list):
        return raw  # a multipart has no transfer encoding of its own
    encoding = str(structure[5] or "7BIT").upper() if len(structure) > 5 else "7BIT"
    try:
        if encoding == "BASE64":
            return base64.b64decode(b"".join(raw.split()), validate=False)
        if encoding == "QUOTED-PRINTABLE":
            return quopri.decodestring(raw)
    except (binascii.Error, ValueError) as exc:
        raise CommandError("Can't decode the part's transfer encoding", "UNKNOWN-CTE") from exc
    if encoding not in ("7BIT", "8BIT", "BINARY"):
        raise CommandError("Unknown Content-Transfer-Encoding", "UNKNOWN-CTE")
    return raw


def _structure_of(bs: Any, part: tuple[int, ...]) -> list[Any] | None:
    """The BODYSTRUCTURE entry a part path names (a single part or a multipart), or None."""
    node = bs
    for p in part:
        if not isinstance(node, list) or not node:
            return None
        if _is_message(node):
            node = node[8]  # a part number inside message/rfc822 counts within its body
        if isinstance(node[0], list):
            children = list(itertools.takewhile(lambda k: isinstance(k, list), node))
            if p > len(children):
                return None
            node = children[p - 1]
        elif p != 1:
            return None
    return node if isinstance(node, list) and node else None


def _is_message(node: list[Any]) -> bool:
    return (len(node) > 8 and isinstance(node[0], str) and node[0].upper() == "MESSAGE"
            and isinstance(node[1], str) and node[1].upper() == "RFC822" and isinstance(node[8], list))


# -- STORE ----------------------------------------------------------------------------------------------


async def cmd_store(s: Session, cmd: Any) -> Result:
    sel = s.selected
    assert sel is not None
    args = list(cmd.args)
    if len(args) < 3:
        raise ParseError("STORE needs a sequence set, an item and flags")
    uids = resolve(s, args.pop(0), cmd.uid)
    unchangedsince = None
    if isinstance(args[0], ListToken):
        mods = list(args.pop(0).items)
        if len(mods) != 2 or not isinstance(mods[0], Atom) or mods[0].value.upper() != "UNCHANGEDSINCE":
            raise ParseError("Invalid STORE modifier")
        unchangedsince = number(mods[1], bits=63)
        s.enabled.add("CONDSTORE")
    if not args or not isinstance(args[0], Atom):
        raise ParseError("Invalid STORE item")
    item = args.pop(0).value.upper()
    silent = item.endswith(".SILENT")
    base = item[:-7] if silent else item
    mode = {"FLAGS": StoreMode.REPLACE, "+FLAGS": StoreMode.ADD, "-FLAGS": StoreMode.REMOVE}.get(base)
    if mode is None:
        raise ParseError("Invalid STORE item")
    if len(args) == 1 and isinstance(args[0], ListToken):
        flags = parse_flags(args[0].items)
    else:
        flags = parse_flags(args)
    if sel.readonly:
        raise CommandError("Mailbox is read-only.", "READ-ONLY")
    mb = sel.mailbox

    def work() -> tuple[list[bytes], list[int]]:
        res = mb.store_flags(uids, mode, flags, unchangedsince)
        lines = []
        for st in res.changed:
            if silent and not (s.condstore and unchangedsince is not None):
                continue
            seq = mb.seq_of(st.uid)
            if seq is None:
                continue
            items = [b"FLAGS " + s.flags_out(st.flags, st.recent)]
            if cmd.uid:
                items.insert(0, b"UID %d" % st.uid)
            if s.condstore:
                items.append(b"MODSEQ (%d)" % st.modseq)
            if silent:
                items = [i for i in items if not i.startswith(b"FLAGS")]
            lines.append(b"* %d FETCH (" % seq + b" ".join(items) + b")")
        modified = res.modified
        if not cmd.uid:
            modified = [q for q in (mb.seq_of(u) for u in modified) if q is not None]
        return lines, modified

    lines, modified = await asyncio.to_thread(work)
    for line in lines:
        s.write(line)
    if modified:
        return f"MODIFIED {format_set(modified)}", "Conditional STORE failed"
    return None, "Store completed."


# -- COPY / MOVE ----------------------------------------------------------------------------------------


async def cmd_copy(s: Session, cmd: Any) -> Result:
    sel = s.selected
    assert sel is not None
    if len(cmd.args) != 2:
        raise ParseError(f"{cmd.name} needs a sequence set and a mailbox")
    uids = resolve(s, cmd.args[0], cmd.uid)
    dest = mailbox_arg(s, cmd.args[1])
    move = cmd.name == "MOVE"
    if move and sel.readonly:
        raise CommandError("Mailbox is read-only.", "READ-ONLY")
    if not uids:
        return None, f"No messages found to {cmd.name.lower()}."
    mb = sel.mailbox
    try:
        res = await asyncio.to_thread(mb.move if move else mb.copy, uids, dest)
    except MailboxNotFound as exc:
        raise CommandError(f"Mailbox doesn't exist: {dest[:100]}", "TRYCREATE") from exc
    src = sorted(res.uid_map)
    code = f"COPYUID {res.uidvalidity} {format_set_ordered(src)} " \
           f"{format_set_ordered([res.uid_map[u] for u in src])}" if src else None
    if move:
        if code:
            s.write(f"* OK [{code}] Moved UIDs.")
        return None, "Move completed."
    return code, "Copy completed."


def format_set_ordered(nums: list[int]) -> str:
    """A UID set that keeps the given order (COPYUID pairs source and destination by position)."""
    parts: list[str] = []
    i = 0
    while i < len(nums):
        j = i
        while j + 1 < len(nums) and nums[j + 1] == nums[j] + 1:
            j += 1
        parts.append(str(nums[i]) if i == j else f"{nums[i]}:{nums[j]}")
        i = j + 1
    return ",".join(parts)


# -- SEARCH / SORT / THREAD -----------------------------------------------------------------------------


class SearchMessage:
    """A view message as SEARCH/SORT/THREAD read it: index data now, header and text on demand."""

    __slots__ = ("seq", "uid", "flags", "_idate", "_date", "size", "modseq", "_mb", "_headers", "_hbytes",
                 "_text", "_blocks")

    def __init__(self, mb: Mailbox, seq: int, facts: tuple[int, frozenset[str], float, int, int, bool],
                 blocks: _HeaderBlocks | None = None) -> None:
        self._mb = mb
        self._blocks = blocks
        self.reset(seq, facts)

    def reset(self, seq: int, facts: tuple[int, frozenset[str], float, int, int, bool]) -> None:
        """Become another message (a search probes every message with one object and keeps only
        the ones that match)."""
        uid, flags, idate, size, modseq, recent = facts
        self.seq = seq
        self.uid = uid
        self.flags = flags | {RECENT} if recent else flags
        self._idate = idate
        self._date: datetime | None = None
        self.size = size
        self.modseq = modseq
        self._headers: dict[str, list[str]] | None = None
        self._hbytes: bytes | None = None
        self._text: str | None = None

    @property
    def internal_date(self) -> datetime:
        """Made on first use: most searches never look at dates."""
        if self._date is None:
            self._date = datetime.fromtimestamp(self._idate, UTC)
        return self._date

    def header_bytes(self) -> bytes:
        if self._hbytes is None and self._blocks is not None:
            self._hbytes = self._blocks.get(self.uid)
        if self._hbytes is None:
            try:
                self._hbytes = self._mb.get_section(self.uid, StoreSection((), "HEADER"))
            except MessageExpunged:
                self._hbytes = b""
        return self._hbytes

    def header(self, name: str) -> list[str]:
        """The values of header ``name``: only that field is looked for (most searches name one)."""
        key = name.lower()
        if self._headers is None:
            self._headers = {}
        found = self._headers.get(key)
        if found is None:
            shared = self._blocks.fields if self._blocks is not None else None
            found = shared.get((key, self.uid)) if shared is not None else None
            if found is None:
                found = _header_values(self.header_bytes(), key)
                if shared is not None:
                    shared[(key, self.uid)] = found
            self._headers[key] = found
        return found

    def text(self) -> str:
        if self._text is None:
            try:
                raw = self._mb.open_message(self.uid)
            except MessageExpunged:
                raw = b""
            self._text = _body_text(raw)
        return self._text


_SINGLE_HEADER_READS = 32


class _HeaderBlocks:
    """The header blocks the store keeps in its index, fetched in one go the first time a search
    needs any header (most searches never do)."""

    __slots__ = ("_mb", "_blocks", "fields", "_misses")

    def __init__(self, mb: Mailbox) -> None:
        self._mb = mb
        self._misses = 0
        self._blocks: dict[int, bytes] | None = None
        self.fields = mb.header_cache()  # field values the store keeps between searches, if any

    def get(self, uid: int) -> bytes | None:
        if self._blocks is None:
            self._misses += 1
            if self._misses <= _SINGLE_HEADER_READS:  # a few new messages: read just theirs
                return self._mb.cached_headers((uid,)).get(uid)
            self._blocks = self._mb.cached_headers(self._mb.uids)
        return self._blocks.get(uid)

    def values(self, name: str, uid: int) -> list[str]:
        """The raw values of field ``name`` (lower case) of message ``uid``, through the shared cache."""
        fields = self.fields
        if fields is None:
            fields = self.fields = {}
        found = fields.get((name, uid))
        if found is None:
            raw = self.get(uid)
            if raw is None:
                try:
                    raw = self._mb.get_section(uid, StoreSection((), "HEADER"))
                except MessageExpunged:
                    raw = b""
            found = fields[(name, uid)] = _header_values(raw, name)
        return found


@functools.lru_cache(maxsize=256)
def _field_regex(name: str) -> re.Pattern[bytes]:
    return re.compile(rb"^" + re.escape(name.encode("utf-8", "replace")) + rb"[ \t]*:(.*(?:\r?\n[ \t].*)*)",
                      re.IGNORECASE | re.MULTILINE)


def _header_values(raw: bytes, name: str) -> list[str]:
    """What ``_parse_headers(raw).get(name, [])`` gives, found by one regex scan instead of a parse."""
    if not name or ":" in name or "\n" in name or "\r" in name:
        return _parse_headers(raw).get(name, [])
    out = []
    for m in _field_regex(name).finditer(raw):
        value = m.group(1).decode("utf-8", "replace")
        out.append(value.replace("\r\n", "").replace("\n", "").strip())
    return out


def _parse_headers(raw: bytes) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    text = raw.decode("utf-8", "replace").replace("\r\n", "\n")
    name = None
    value: list[str] = []
    for line in text.split("\n"):
        if line[:1] in (" ", "\t") and name is not None:
            value.append(line)
            continue
        if name is not None:
            out.setdefault(name, []).append("".join(value).strip())
        name = None
        if ":" in line:
            n, _, v = line.partition(":")
            name, value = n.strip().lower(), [v]
    if name is not None:
        out.setdefault(name, []).append("".join(value).strip())
    return out


def _body_text(raw: bytes) -> str:
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    parts = []
    for part in msg.walk():
        if part.is_multipart() or part.get_content_maintype() not in ("text", "message"):
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        charset = part.get_content_charset() or "utf-8"
        try:
            parts.append(payload.decode(charset, "replace"))
        except LookupError:
            parts.append(payload.decode("utf-8", "replace"))
    return "\n".join(parts)


class SearchHit(NamedTuple):
    """What SEARCH reports of a match (SORT and THREAD need the whole :class:`SearchMessage`); made
    only for ESEARCH options and MODSEQ, the matches travel as plain tuples."""

    seq: int
    uid: int
    modseq: int


def _matching(mb: Mailbox, key: Any, saved: frozenset[int] | None, uid: bool,
              hits: bool = False) -> list[Any]:
    """The view's messages that match ``key``, in sequence order (with ``hits``: as (seq, uid, modseq)
    tuples). Keys the index decides run over its facts; otherwise one probe object is moved over
    them and only a match is kept, so a search builds objects for what it finds, not for every
    message."""
    from dovetail.imap import search as sm

    uids = mb.uids
    ctx = sm.SearchContext(uid=uid, saved=saved, max_seq=len(uids), max_uid=uids[-1] if uids else None)
    facts = mb.message_facts()
    if len(facts) == len(uids) and all(f[0] == u for f, u in zip(facts, uids, strict=True)):
        numbered: Any = enumerate(facts, 1)
    else:
        seq_of = {u: i for i, u in enumerate(uids, 1)}
        numbered = [(seq_of[f[0]], f) for f in facts if f[0] in seq_of]
    blocks = _HeaderBlocks(mb)
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


def _search_error(exc: Exception) -> CommandError:
    return CommandError(getattr(exc, "text", str(exc)), getattr(exc, "code", None),
                        getattr(exc, "status", "BAD"))


async def cmd_search(s: Session, cmd: Any) -> Result:
    from dovetail.imap import search as sm

    sel = s.selected
    assert sel is not None
    try:
        req = sm.parse_search(cmd.args)
    except sm.SearchError as exc:
        raise _search_error(exc) from exc
    if req.uses_modseq:
        s.enabled.add("CONDSTORE")
    mb = sel.mailbox
    saved = sel.saved

    def work() -> list[Any]:
        return _matching(mb, req.key, saved, cmd.uid, hits=True)

    try:
        found = await asyncio.to_thread(work)
    except sm.SearchError as exc:
        raise _search_error(exc) from exc
    # (seq, uid, modseq) tuples in sequence order: most searches need just the numbers.
    nums = [t[1] for t in found] if cmd.uid else [t[0] for t in found]
    returns = req.returns
    if returns is not None or req.uses_modseq:
        found = [SearchHit._make(t) for t in found]
    if returns is not None and "SAVE" in returns:
        sel.saved = sm.saved_result(found, returns)
    modseq = None
    if req.uses_modseq:
        modseq = sm.highest_modseq(sm.reported(found, returns))
    if returns is not None or s.rev2:
        line = sm.format_esearch(cmd.tag, cmd.uid, nums, returns or {"ALL"}, modseq)
        if line is not None:
            s.write(line)
    else:
        s.write(sm.format_search(nums, modseq))
    return None, "Search completed."


async def cmd_sort(s: Session, cmd: Any) -> Result:
    from dovetail.imap import search as sm
    from dovetail.imap import sort as so

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
    s.write(so.format_sort(nums))
    return None, "Sort completed."


async def cmd_thread(s: Session, cmd: Any) -> Result:
    from dovetail.imap import search as sm
    from dovetail.imap import thread as th

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


COMMANDS = {
    "FETCH": (cmd_fetch, SEL),
    "STORE": (cmd_store, SEL),
    "COPY": (cmd_copy, SEL),
    "MOVE": (cmd_copy, SEL),
    "SEARCH": (cmd_search, SEL),
    "SORT": (cmd_sort, SEL),
    "THREAD": (cmd_thread, SEL),
}
