"""How each FETCH item of one message is rendered.

``item_builder`` picks, once per FETCH, a function per requested item: the items the index answers
(UID, FLAGS, RFC822.SIZE, MODSEQ, and ENVELOPE, BODYSTRUCTURE and BODY as stored IMAP bytes) get
their own, the rest go through ``_item``, which reads sections from the store and undoes transfer
encodings for BINARY (RFC 3516).
"""

from __future__ import annotations

import base64
import binascii
import functools
import itertools
from collections.abc import Callable
from datetime import datetime
from typing import Any

from dovetail.imap.commands.context import CommandSession
from dovetail.imap.fetchatt import FetchAtt
from dovetail.imap.response import imap_date, literal, string
from dovetail.imap.state import CommandError
from dovetail.mime.preview import preview
from dovetail.mime.transfer import decode_quoted_printable
from dovetail.storage.api import Mailbox, MessageInfo
from dovetail.storage.api import Section as StoreSection


def item_builder(s: CommandSession, mb: Mailbox, att: FetchAtt) -> Callable[[MessageInfo], bytes]:
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
    if name == "BODYSTRUCTURE":
        return lambda info: (b"BODYSTRUCTURE " + info.bodystructure_imap if info.bodystructure_imap is not None
                             else _item(s, mb, info, att))
    if name == "BODY" and att.section is None:
        return lambda info: (b"BODY " + info.body_imap if info.body_imap is not None
                             else _item(s, mb, info, att))
    if name == "INTERNALDATE":
        return lambda info: _internaldate(info.internal_date)
    head = att.response_name().encode() if att.section is not None else b""  # once, not per message
    sec = att.section
    if name == "BODY" and sec is not None:
        # A section of every message (HEADER.FIELDS of a message list): the section made once.
        ssec = StoreSection(sec.part, sec.text or None, sec.fields)
        partial = (att.partial[0], att.partial[1] or 0) if att.partial else None
        get_section = mb.get_section
        head += b" "
        return lambda info: head + literal(get_section(info.uid, ssec, partial))
    return lambda info: _item(s, mb, info, att, head)


def _internaldate(when: datetime) -> bytes:
    return _internaldate_at(when, when.utcoffset())


@functools.lru_cache(maxsize=4096)
def _internaldate_at(when: datetime, offset: Any) -> bytes:
    """The INTERNALDATE item, formatted once per date (a FETCH of a page asks for the same ones again);
    keyed with the offset too, as datetimes of one instant in two zones are equal but print apart."""
    return b'INTERNALDATE "' + imap_date(when).encode() + b'"'


def _envelope(value: Any) -> bytes:
    from dovetail.mime.imapdata import envelope_to_imap

    return b"NIL" if value is None else envelope_to_imap(value)


def _body(value: Any) -> bytes:
    from dovetail.mime.imapdata import body_to_imap

    return b"NIL" if value is None else body_to_imap(value)


def _item(s: CommandSession, mb: Mailbox, info: MessageInfo, att: FetchAtt, head: bytes = b"") -> bytes:
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
        cached = info.body_imap if info.body_imap is not None else info.bodystructure_imap
        if cached is not None:
            return b"BODY " + cached
        return b"BODY " + _body(info.body if info.body is not None else info.bodystructure)
    if name == "PREVIEW":
        return b"PREVIEW " + string(preview(mb.open_message(info.uid)), utf8=s.utf8)
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
    head = head or att.response_name().encode()
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
            return decode_quoted_printable(raw)
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
