"""Header text as SEARCH, SORT and THREAD see it: encoded words, dates, addresses, Message-IDs.

RFC 2047 decoding is hand-written rather than ``email.header.decode_header`` because that one keeps
undecodable words as raw bytes, raises on odd charsets and is slow; here every input gives text
(unknown charsets and broken words stay as they were written) and results are cached, since one
SEARCH decodes the same few headers of thousands of messages.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import datetime as dt
import functools
import re
import unicodedata
from email.utils import parsedate_tz

from dovetail.mime.address import parse_address_list
from dovetail.mime.text import fold_case as fold_case  # kept with the text it folds; SEARCH imports it here

_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_BETWEEN_WORDS = re.compile(r"[ \t\r\n]+")
_Q_ESCAPE = re.compile(rb"=([0-9A-Fa-f]{2})")
_FOLD = re.compile(r"\r?\n(?=[ \t])")
_WSP_RUN = re.compile(r"[ \t\r\n]+")
_MSGID = re.compile(r"<([^<>\s@]+@[^<>\s]+)>")
_MAX_MSGIDS = 1000  # References lines longer than this are cut: a thread is not that deep


def _decode_word(charset: str, encoding: str, text: str) -> str | None:
    charset = charset.split("*", 1)[0]  # RFC 2231 language suffix
    try:
        codec = codecs.lookup(charset).name
    except LookupError:
        return None
    if encoding in "bB":
        try:
            raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=False)
        except (binascii.Error, ValueError):
            return None
    else:
        raw = _Q_ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), text.replace("_", " ").encode(
            "ascii", "surrogateescape"))
    return raw.decode(codec, "replace")


@functools.lru_cache(maxsize=8192)
def decode_words(value: str) -> str:
    """Decode RFC 2047 encoded words; whitespace between two adjacent encoded words is dropped."""
    if "=?" not in value:
        return value
    out: list[str] = []
    pos = 0
    last_was_word = False
    for m in _ENCODED_WORD.finditer(value):
        gap = value[pos:m.start()]
        decoded = _decode_word(m.group(1), m.group(2), m.group(3))
        if decoded is None:
            out.append(gap + m.group(0))
            last_was_word = False
        else:
            if not (last_was_word and _BETWEEN_WORDS.fullmatch(gap)):
                out.append(gap)
            out.append(decoded)
            last_was_word = True
        pos = m.end()
    out.append(value[pos:])
    return "".join(out)


def unfold(value: str) -> str:
    return _FOLD.sub("", value)


def collate(text: str) -> str:
    """Sort key for i;unicode-casemap (upper-case mapping, as i;ascii-casemap for ASCII text)."""
    if text.isascii():
        return text.upper()
    return unicodedata.normalize("NFKD", text).upper()


# -- dates ------------------------------------------------------------------------------------------

def parse_date_header(value: str | None) -> tuple[dt.date, dt.datetime] | None:
    """(calendar date as written, instant in UTC) of an RFC 5322 Date value, or None if unparseable."""
    if not value:
        return None
    try:
        parts = parsedate_tz(value)
        if parts is None:
            return None
        year, month, day, hour, minute, second = parts[:6]
        if year < 100:  # RFC 5322 §4.3 obsolete two-digit years
            year += 2000 if year < 50 else 1900
        offset = parts[9] or 0
        tz = dt.timezone(dt.timedelta(seconds=offset))
        when = dt.datetime(year, month, day, hour, minute, min(second, 59), tzinfo=tz)
        return when.date(), when.astimezone(dt.UTC)
    except (ValueError, OverflowError, TypeError, IndexError):
        return None


# -- addresses ---------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=65536)
def address_text(value: str) -> str:
    """An address header as SEARCH FROM/TO/CC/BCC matches it (Dovecot's way): every address written
    anew as ``Name <local@domain>``, so comments, quoting and folding inside the address do not hide
    it (``<a (c)@ (c) b.org>`` is found by ``a@b.org``) and display names are decoded."""
    addrs = parse_address_list(unfold(value))
    if not addrs:
        return decode_words(value)
    parts = []
    for name, _route, mailbox, host in addrs:
        if host is None:  # a group's start (its name) or end marker
            parts.append(f"{mailbox}:" if mailbox else ";")
            continue
        spec = f"{mailbox or ''}@{host}"
        parts.append(f"{decode_words(name)} <{spec}>" if name else spec)
    return ", ".join(parts)


def first_mailbox(values: list[str]) -> str:
    """RFC 5256's sort key of an address header: the mailbox (local part) of its first ENVELOPE address,
    which for a group is the group's name."""
    if not values:
        return ""
    addrs = parse_address_list(unfold(values[0]))
    return decode_words(addrs[0][2] or "") if addrs else ""


def first_display(values: list[str]) -> str:
    """RFC 5957's DISPLAYFROM/DISPLAYTO key: the first ENVELOPE address's decoded display name, else its
    ``mailbox@host``; a group's name for a group (as Dovecot sorts ``a: x@y;``)."""
    if not values:
        return ""
    addrs = parse_address_list(unfold(values[0]))
    if not addrs:
        return ""
    name, _route, mailbox, host = addrs[0]
    if host is None:
        return decode_words(mailbox or "")
    if name:
        return decode_words(name).strip()
    return f"{mailbox or ''}@{host}"


# -- message ids -------------------------------------------------------------------------------------

def message_ids(value: str) -> list[str]:
    """All ``<id@host>`` message ids in a References / In-Reply-To / Message-ID value, in order."""
    return _MSGID.findall(value)[:_MAX_MSGIDS] if value else []


def normalize_spaces(text: str) -> str:
    """Tabs and line breaks to spaces, runs of spaces to one (RFC 5256 §2.1 step 1)."""
    return _WSP_RUN.sub(" ", text)


# -- base subject (RFC 5256 §2.1) --------------------------------------------------------------------

def _skip_blob(s: str, i: int) -> int:
    """Index after a subj-blob (``[...]`` and one optional space) at ``i``, or -1."""
    if i >= len(s) or s[i] != "[":
        return -1
    j = i + 1
    while j < len(s) and s[j] not in "[]":
        j += 1
    if j >= len(s) or s[j] != "]":
        return -1
    j += 1
    if j < len(s) and s[j] == " ":
        j += 1
    return j


def _skip_leader(s: str, i: int) -> tuple[int, bool]:
    """Index after a subj-leader at ``i`` (or ``i``) and whether it held a Re:/Fwd:."""
    start = i
    if i < len(s) and s[i] == " ":
        i += 1
        start = i
    j = i
    while j < len(s) and s[j] == "[":
        k = _skip_blob(s, j)
        if k < 0:
            return start, False
        j = k
    upper = s[j:j + 3].upper()
    if upper.startswith("RE"):
        j += 2
    elif upper == "FWD":
        j += 3
    elif upper.startswith("FW"):
        j += 2
    else:
        return start, False
    if j < len(s) and s[j] == " ":
        j += 1
    if j < len(s) and s[j] == "[":
        j = _skip_blob(s, j)
        if j < 0:
            return start, False
    if j < len(s) and s[j] == ":":
        return j + 1, True
    return start, False


def extract_base_subject(text: str) -> tuple[str, bool]:
    """RFC 5256 §2.1 steps 2–7 on already decoded text: (base subject, is reply or forward).

    Idempotent: the base subject of a base subject is itself.
    """
    s = normalize_spaces(text)
    reply = False
    while True:
        # (2) trailers: "(fwd)" and spaces
        while True:
            if s.endswith(" "):
                s = s[:-1]
            elif s[-5:].upper() == "(FWD)":
                s = s[:-5]
                reply = True
            else:
                break
        # (3)-(5) leaders and blobs
        while True:
            found = False
            i, was_reply = _skip_leader(s, 0)
            if i:
                s = s[i:]
                found = True
                reply = reply or was_reply
            j = _skip_blob(s, 0)
            if j > 0 and j < len(s):
                s = s[j:]
                found = True
            if not found:
                break
        # (6) [fwd: ... ]
        if s[:5].upper() == "[FWD:" and s.endswith("]"):
            s = s[5:-1]
            reply = True
            continue
        return s, reply


@functools.lru_cache(maxsize=65536)  # a SORT SUBJECT or THREAD reads every message's: larger than a folder
def base_subject(raw: str) -> tuple[str, bool]:
    """Base subject of a raw Subject value (encoded words decoded first) and its reply flag."""
    return extract_base_subject(decode_words(unfold(raw)))
