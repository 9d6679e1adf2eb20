"""IMAP THREAD (RFC 5256): ORDEREDSUBJECT and REFERENCES, and the nested thread-list response.

REFERENCES follows RFC 5256 §2.2 step by step, with the choices Dovecot makes where the text leaves
room: a link between two referenced ids is set only if the child has no parent yet, the message's own
References/In-Reply-To replace whatever parent others implied, and dummies below the root collapse into
their first real ancestor. Everything is iterative, so a ten-thousand-message reply chain is fine.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from dovetail.imap._searchkeys_headers import base_subject, collate, message_ids
from dovetail.imap.search import (
    SearchableMessage,
    SearchError,
    SearchKey,
    check_charset,
    normalize_token,
    parse_keys,
)
from dovetail.imap.sort import sent_datetime

ALGORITHMS = ("ORDEREDSUBJECT", "REFERENCES")


@dataclass(frozen=True)
class ThreadRequest:
    algorithm: str
    charset: str
    key: SearchKey


def parse_thread(args: Iterable[object]) -> ThreadRequest:
    """``algorithm charset search-keys`` tokens → ``ThreadRequest``; raises ``SearchError`` only."""
    toks = [normalize_token(t) for t in args]
    if len(toks) < 3:
        raise SearchError("THREAD needs an algorithm, a charset and search keys")
    algo = toks[0]
    if not isinstance(algo, str) or algo.upper() not in ALGORITHMS:
        raise SearchError("Unknown thread algorithm")
    charset = check_charset(toks[1])
    return ThreadRequest(algo.upper(), charset, parse_keys(toks[2:], charset))


@dataclass
class ThreadNode:
    """One message (``num``: its sequence number or UID) or a dummy (``num`` None) with children."""

    num: int | None
    children: list[ThreadNode] = field(default_factory=list)


# -- shared helpers ------------------------------------------------------------------------------------

def _order(msg: SearchableMessage) -> tuple[dt.datetime, int]:
    return sent_datetime(msg), msg.seq


def _subject(msg: SearchableMessage) -> tuple[str, bool] | None:
    values = msg.header("subject")
    if not values:
        return None
    base, reply = base_subject(values[0])
    return collate(base), reply


# -- ORDEREDSUBJECT -------------------------------------------------------------------------------------

def _ordered_subject(messages: Sequence[SearchableMessage], uid: bool) -> list[ThreadNode]:
    keyed = sorted(messages, key=lambda m: (_subject(m) or ("", False))[0:1] + _order(m))
    threads: list[tuple[tuple[dt.datetime, int], ThreadNode]] = []
    last_subject = None
    for m in keyed:
        subj = (_subject(m) or ("", False))[0]
        num = m.uid if uid else m.seq
        if threads and subj == last_subject:
            threads[-1][1].children.append(ThreadNode(num))
        else:
            threads.append((_order(m), ThreadNode(num)))
            last_subject = subj
    threads.sort(key=lambda t: t[0])
    return [node for _, node in threads]


# -- REFERENCES -----------------------------------------------------------------------------------------

class _Box:
    """RFC 5256's container: a message (or a dummy for an id only referenced) and its links."""

    __slots__ = ("msg", "parent", "children", "order", "subject")

    def __init__(self) -> None:
        self.msg: SearchableMessage | None = None
        self.parent: _Box | None = None
        self.children: list[_Box] = []
        self.order: tuple[dt.datetime, int] | None = None
        self.subject: tuple[str, bool] | None = None


def _by_order(b: _Box) -> tuple[dt.datetime, int]:
    """Sort key of a box: a message's own date, a dummy's taken from its first child before sorting."""
    if b.order is None:
        raise AssertionError("thread container sorted before its date was known")
    return b.order


def _is_reply(b: _Box) -> bool:
    """The box's subject had a reply prefix (a box without a subject is no reply)."""
    return b.subject is not None and b.subject[1]


def _is_ancestor(anc: _Box, node: _Box) -> bool:
    """``anc`` is ``node`` or one of its ancestors."""
    cur: _Box | None = node
    while cur is not None:
        if cur is anc:
            return True
        cur = cur.parent
    return False


def _link_messages(messages: Sequence[SearchableMessage]) -> list[_Box]:
    """Step 1: containers for every message and referenced id, parent links set. Returns all boxes."""
    table: dict[str, _Box] = {}
    boxes: list[_Box] = []

    def box_for(msgid: str) -> _Box:
        b = table.get(msgid)
        if b is None:
            b = table[msgid] = _Box()
            boxes.append(b)
        return b

    for msg in sorted(messages, key=lambda m: m.seq):
        ids = message_ids(" ".join(msg.header("message-id")))
        own = table.get(ids[0]) if ids else None
        if ids and own is None:
            own = box_for(ids[0])
        if own is None or own.msg is not None:  # no id, or a duplicate: a unique one of its own
            own = _Box()
            boxes.append(own)
        own.msg = msg

        refs = message_ids(" ".join(msg.header("references")))
        if not refs:
            refs = message_ids(" ".join(msg.header("in-reply-to")))[:1]
        prev: _Box | None = None
        for ref in refs:
            cur = box_for(ref)
            if prev is not None and cur.parent is None and not _is_ancestor(cur, prev):
                cur.parent = prev
            prev = cur
        if own.parent is not None and own.parent is not prev:
            own.parent = None
        if prev is not None and own.parent is None and not _is_ancestor(own, prev):
            own.parent = prev
    return boxes


def _references(messages: Sequence[SearchableMessage], uid: bool) -> list[ThreadNode]:
    boxes = _link_messages(messages)
    # Steps 2-3: the root set, dummies pruned. A message hangs under its nearest real ancestor, or
    # under the topmost dummy when it has none; empty dummies vanish.
    for b in boxes:
        b.children = []
    roots: list[_Box] = []
    for b in boxes:
        if b.parent is None:
            if b.msg is not None:
                roots.append(b)
            continue
        if b.msg is None:
            continue
        p = b.parent
        while p.msg is None and p.parent is not None:
            p = p.parent
        if p.msg is None and not p.children:
            roots.append(p)
        p.children.append(b)
    for b in boxes:
        if b.msg is not None:
            b.order = _order(b.msg)
            b.subject = _subject(b.msg)

    def finish_root(r: _Box) -> _Box:
        """Sort a dummy's children and take its date from the first; promote a single child."""
        if r.msg is None:
            r.children.sort(key=_by_order)
            if len(r.children) == 1:
                child = r.children[0]
                child.parent = None
                return child
            r.order = r.children[0].order
            r.subject = r.children[0].subject
        return r

    # Step 4: sort the root set by date.
    roots = sorted((finish_root(r) for r in roots), key=_by_order)

    # Step 5: gather threads with the same base subject.
    table: dict[str, _Box] = {}
    for r in roots:
        if r.subject is None or not r.subject[0]:
            continue
        subj, reply = r.subject
        t = table.get(subj)
        if t is None or (t.msg is not None and (r.msg is None or (_is_reply(t) and not reply))):
            table[subj] = r
    merged: list[_Box] = []
    gone: set[int] = set()
    for r in roots:
        if r.subject is None or not r.subject[0]:
            continue
        subj, reply = r.subject
        t = table[subj]
        if t is r:
            continue
        gone.add(id(r))
        if r.msg is None and t.msg is None:
            t.children.extend(r.children)
        elif t.msg is None or (reply and not _is_reply(t)):
            t.children.append(r)
        else:
            dummy = _Box()
            dummy.children = [t, r]
            dummy.subject = t.subject
            table[subj] = dummy
            merged.append(dummy)
            gone.add(id(t))
    roots = [r for r in roots + merged if id(r) not in gone]

    # Step 6: sort every set of siblings by date, dummies by their first child.
    stack = list(roots)
    while stack:
        b = stack.pop()
        if b.children:
            b.children.sort(key=_by_order)
            stack.extend(b.children)
    for r in roots:
        if r.msg is None:
            r.order = r.children[0].order
    roots.sort(key=_by_order)
    return [_to_node(r, uid) for r in roots]


def _to_node(root: _Box, uid: bool) -> ThreadNode:
    def num(b: _Box) -> int | None:
        return None if b.msg is None else (b.msg.uid if uid else b.msg.seq)

    top = ThreadNode(num(root))
    stack = [(root, top)]
    while stack:
        b, node = stack.pop()
        for c in b.children:
            child = ThreadNode(num(c))
            node.children.append(child)
            stack.append((c, child))
    return top


def thread(algorithm: str, messages: Sequence[SearchableMessage], uid: bool = False) -> list[ThreadNode]:
    """Threads of ``messages`` (the search result) by ``algorithm``; numbers are UIDs when ``uid``."""
    algorithm = algorithm.upper()
    if algorithm == "REFERENCES":
        return _references(messages, uid)
    if algorithm == "ORDEREDSUBJECT":
        return _ordered_subject(messages, uid)
    raise SearchError("Unknown thread algorithm")


# -- response -------------------------------------------------------------------------------------------

def format_thread_list(roots: Sequence[ThreadNode]) -> str:
    """``(1 2)(3 (4)(5))``: a chain of only children inline, several children each in parentheses."""
    out: list[str] = []
    stack: list[ThreadNode | str] = []
    for root in reversed(roots):
        stack.extend((")", root, "("))
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
            continue
        pieces: list[ThreadNode | str] = []
        if item.num is not None:
            pieces.append(str(item.num))
        kids = item.children
        if len(kids) == 1 and item.num is not None:
            pieces.extend((" ", kids[0]))
        elif kids:
            if item.num is not None:
                pieces.append(" ")
            for kid in kids:
                pieces.extend(("(", kid, ")"))
        stack.extend(reversed(pieces))
    return "".join(out)


def format_thread(roots: Sequence[ThreadNode]) -> str:
    """``* THREAD (1 2)(3 (4)(5))``"""
    body = format_thread_list(roots)
    return "* THREAD " + body if body else "* THREAD"
