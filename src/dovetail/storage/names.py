"""Mailbox names: modified UTF-7 (RFC 3501 5.1.3), validation, and the Maildir++ on-disk form.

The codec is hand-written because the stdlib has none for the IMAP variant ('&' shift, ',' for '/',
no optional direct characters). Names on disk are mUTF-7 as Dovecot stores them by default, with the
IMAP separator '/' turned into Maildir++'s '.'; a '.' inside an IMAP name part therefore cannot be
stored and is refused, as Dovecot refuses it with the default ``maildir`` layout.
"""

from __future__ import annotations

import base64
import re

from dovetail.storage.api import InvalidMailboxName

DELIMITER = "/"
MAX_NAME_BYTES = 512
MAX_PART_BYTES = 200
MAX_DEPTH = 16


def encode_mutf7(text: str) -> str:
    """``str`` -> modified UTF-7 (ASCII)."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            raw = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for ch in text:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    flush()
    return "".join(out)


_SHIFT = re.compile(r"&([A-Za-z0-9+,]*)-")


def decode_mutf7(text: str) -> str:
    """Modified UTF-7 -> ``str``. Raises ValueError on malformed input (stray '&', bad base64,
    8-bit characters, lone surrogates, or shifted runs that encode printable ASCII)."""
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if not 0x20 <= ord(ch) <= 0x7E:
            raise ValueError("non-ASCII or control character in mUTF-7")
        if ch != "&":
            out.append(ch)
            i += 1
            continue
        m = _SHIFT.match(text, i)
        if not m:
            raise ValueError("unterminated '&' shift in mUTF-7")
        b64 = m.group(1)
        if not b64:
            out.append("&")
        else:
            if len(b64) % 4 == 1:
                raise ValueError("bad base64 length in mUTF-7")
            raw = base64.b64decode(b64.replace(",", "/") + "=" * (-len(b64) % 4))
            if len(raw) % 2:
                raise ValueError("odd UTF-16 length in mUTF-7")
            try:
                decoded = raw.decode("utf-16-be")
            except UnicodeDecodeError as exc:
                raise ValueError("bad UTF-16 in mUTF-7") from exc
            if any(0x20 <= ord(c) <= 0x7E for c in decoded):
                raise ValueError("printable ASCII must not be shifted in mUTF-7")
            if encode_mutf7(decoded) != m.group(0):
                raise ValueError("non-canonical mUTF-7")
            out.append(decoded)
        i = m.end()
    return "".join(out)


def is_inbox(name: str) -> bool:
    return name.upper() == "INBOX"


def normalize(name: str) -> str:
    """Validate an IMAP mailbox name and return its canonical form (``INBOX`` upper-cased, also as
    the first level of a hierarchy). Raises InvalidMailboxName."""
    if not isinstance(name, str) or not name:
        raise InvalidMailboxName("empty mailbox name")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise InvalidMailboxName("mailbox name too long")
    if any(ord(c) < 0x20 or ord(c) == 0x7F or 0xD800 <= ord(c) <= 0xDFFF for c in name):
        raise InvalidMailboxName("control character in mailbox name")
    parts = name.split(DELIMITER)
    if len(parts) > MAX_DEPTH:
        raise InvalidMailboxName("mailbox hierarchy too deep")
    for part in parts:
        if not part:
            raise InvalidMailboxName("empty hierarchy level in mailbox name")
        if part in (".", "..") or part.startswith("."):
            raise InvalidMailboxName("mailbox name part may not start with '.'")
        if "." in part:
            raise InvalidMailboxName("'.' is not allowed in mailbox names (it is the on-disk separator)")
        if part.startswith("~") or "\\" in part or "*" in part or "%" in part:
            raise InvalidMailboxName("reserved character in mailbox name")
        if len(encode_mutf7(part)) > MAX_PART_BYTES:
            raise InvalidMailboxName("mailbox name part too long")
    if is_inbox(parts[0]):
        parts[0] = "INBOX"
    return DELIMITER.join(parts)


def to_disk(name: str) -> str:
    """Canonical IMAP name -> Maildir++ folder directory name (``"."`` for INBOX, ``".a.b"``)."""
    name = normalize(name)
    if name == "INBOX":
        return "."
    return "." + ".".join(encode_mutf7(p) for p in name.split(DELIMITER))


def from_disk(dirname: str) -> str | None:
    """Maildir++ folder directory name -> IMAP name, or None when it is not a valid folder name."""
    if not dirname.startswith(".") or dirname in (".", ".."):
        return None
    try:
        parts = [decode_mutf7(p) for p in dirname[1:].split(".")]
    except ValueError:
        return None
    name = DELIMITER.join(parts)
    try:
        return normalize(name)
    except InvalidMailboxName:
        return None


def parents(name: str) -> list[str]:
    """``"a/b/c"`` -> ``["a", "a/b"]``."""
    parts = name.split(DELIMITER)
    return [DELIMITER.join(parts[:i]) for i in range(1, len(parts))]


def pattern_regex(reference: str, pattern: str) -> re.Pattern[str]:
    """IMAP LIST pattern (``*`` and ``%``) -> compiled regex; INBOX matched case-insensitively."""
    full = reference + pattern if reference and not pattern.startswith(DELIMITER) else pattern
    out = []
    for ch in full:
        if ch == "*":
            out.append(".*")
        elif ch == "%":
            out.append("[^/]*")
        else:
            out.append(re.escape(ch))
    body = "".join(out)
    if full[:5].upper() == "INBOX":
        body = "(?i:INBOX)" + "".join(out[5:])
    return re.compile(body + r"\Z", re.S)
