"""FETCH PREVIEW (RFC 8970): a short plain-text preview of a message, as mail clients show under the
subject: the first text/plain part (else the first text/html one, markup removed), without quoted
lines, white space collapsed, at most 200 characters."""

from __future__ import annotations

import html
import re

from dovetail.mime.text import text_parts

MAX_CHARS = 200
MAX_OCTETS = 256  # RFC 8970 §3.1: never more than this in UTF-8
_INVISIBLE = re.compile(r"<(script|style|head)\b.*?</\1\s*>", re.I | re.S)
_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")


def preview(raw: bytes) -> str:
    plain = html_text = None
    for subtype, text in text_parts(raw):
        if subtype == "plain" and plain is None:
            plain = text
            break
        if subtype == "html" and html_text is None:
            html_text = text
    if plain is None and html_text is None:
        return ""
    text = plain if plain is not None else html.unescape(_TAG.sub(" ", _INVISIBLE.sub(" ", html_text or "")))
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith(">")]
    out = _SPACE.sub(" ", " ".join(lines)).strip()[:MAX_CHARS]
    while len(out.encode()) > MAX_OCTETS:
        out = out[:-1]
    return out
