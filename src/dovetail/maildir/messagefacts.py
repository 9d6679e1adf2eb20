"""What the index keeps about a message: :func:`name_facts` from its file name alone when a sync
first sees it (sizes; the file is read only when its name lacks them), :func:`analyse_file` from its
bytes the first time a client asks for more (ENVELOPE, BODYSTRUCTURE, part offsets, header block)."""

from __future__ import annotations

import os
from pathlib import Path

from dovetail.maildir.filename import sizes_in_name
from dovetail.maildir.index import DATE_UNKNOWN, dumps
from dovetail.mime.imapdata import body_to_imap, envelope_to_imap
from dovetail.mime.parser import Part, parse_message, to_crlf
from dovetail.mime.structure import bodystructure, envelope

MAX_MESSAGE_BYTES = 256 * 1024 * 1024
MAX_CACHED_HEADER = 64 * 1024  # larger header blocks are read from the file when needed


def part_tree(part: Part) -> list:
    """Compact offsets tree: [header_start, body_start, end, kind, children] (kind m/r/l)."""
    if part.is_multipart:
        return [part.header_start, part.body_start, part.end, "m", [part_tree(c) for c in part.children]]
    if part.message is not None:
        return [part.header_start, part.body_start, part.end, "r", [part_tree(part.message)]]
    return [part.header_start, part.body_start, part.end, "l", []]


def analyse(data: bytes) -> dict:
    """Everything the index keeps about a message, from its bytes (any line endings)."""
    crlf = to_crlf(data)
    root = parse_message(crlf)
    env = envelope(root.header)
    body = bodystructure(crlf, root, extensible=False)
    bs = bodystructure(crlf, root, extensible=True)
    header = crlf[root.header_start : root.body_start]
    return {
        "vsize": len(crlf),
        "envelope": dumps(env),
        "body": dumps(body),
        "bodystructure": dumps(bs),
        "parts": dumps(part_tree(root)),
        "envelope_imap": envelope_to_imap(env),
        "body_imap": body_to_imap(body),
        "bodystructure_imap": body_to_imap(bs),
        "header": header if len(header) <= MAX_CACHED_HEADER else None,
    }


class FileReads:
    """How many message files this process has opened to learn their facts: a first SELECT should
    open none (tests and benchmarks read ``count``)."""

    count = 0


def name_facts(directory: str, filename: str) -> dict | None:
    """The row facts of file ``filename`` in ``directory`` that a sync found: ``size`` and ``vsize``
    from ``,S=``/``,W=``, the date left unknown. A name without them costs a ``stat`` (size, and the
    date comes free) or a read (vsize). None when the file is gone."""
    size, vsize = sizes_in_name(filename)
    idate = DATE_UNKNOWN
    if size is not None and vsize is not None:
        return {"size": size, "vsize": vsize, "idate": idate}
    path = os.path.join(directory, filename)
    try:
        if vsize is None:
            FileReads.count += 1
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                vsize = len(to_crlf(f.read(MAX_MESSAGE_BYTES)))
            size, idate = st.st_size, st.st_mtime
        elif size is None:
            st = os.stat(path)
            size, idate = st.st_size, st.st_mtime
    except FileNotFoundError:
        return None
    return {"size": size, "vsize": vsize, "idate": idate}


def header_block(crlf: bytes) -> bytes:
    """The header block (with its blank line) of a CRLF message, as :func:`analyse` keeps it, found
    without parsing the rest."""
    if crlf.startswith(b"\r\n"):
        return crlf[:2]
    blank = crlf.find(b"\r\n\r\n")
    return crlf if blank < 0 else crlf[: blank + 4]


_HEAD_READ = 16 * 1024  # what a first read takes: most headers end well within it


def read_header(path: Path) -> bytes | None:
    """The header block of the message in ``path`` (what a header SEARCH needs); None when it is gone.

    Only the first ``_HEAD_READ`` bytes are read and converted when the header ends within them (a
    large attachment is neither read nor converted): the line ending conversion of a prefix is a
    prefix of the whole message's, so the first blank line found in it is the message's."""
    FileReads.count += 1
    try:
        with open(path, "rb") as f:
            data = f.read(_HEAD_READ)
            if len(data) == _HEAD_READ:
                head = to_crlf(data)
                if head.startswith(b"\r\n") or b"\r\n\r\n" in head:
                    return header_block(head)
                data += f.read(MAX_MESSAGE_BYTES - _HEAD_READ)
    except FileNotFoundError:
        return None
    return header_block(to_crlf(data))


def analyse_file(path: Path) -> dict | None:
    """:func:`analyse` of the message in ``path`` plus its file size and date; None when it is gone."""
    FileReads.count += 1
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            data = f.read(MAX_MESSAGE_BYTES)
    except FileNotFoundError:
        return None
    facts = analyse(data)
    facts["size"] = st.st_size
    facts["idate"] = st.st_mtime
    return facts
