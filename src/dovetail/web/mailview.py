"""Showing a message body safely: the HTML part, or the text part as preformatted text.

The document is served with a CSP that allows no scripts, no remote loads (images, fonts, CSS,
frames) and no form posts, and the page frames it in an ``<iframe sandbox>`` without
``allow-scripts`` or ``allow-same-origin``: two independent walls, so tracking pixels and active
content stay inert even if one fails. Inline ``cid:`` and ``data:`` images still show.
"""

from __future__ import annotations

import email
import email.policy
from html import escape

from fastapi.responses import Response

BODY_CSP = ("default-src 'none'; img-src data: cid:; style-src 'unsafe-inline'; font-src data:; "
            "form-action 'none'; frame-ancestors 'self'; base-uri 'none'; sandbox")
MAX_BODY = 5 * 1024 * 1024


def pick_body(raw: bytes) -> tuple[str, str]:
    """(kind, content): ``html`` with the HTML part, ``text`` with the plain part, or ``text`` with a note."""
    try:
        msg = email.message_from_bytes(raw[:MAX_BODY], policy=email.policy.default)
        part = msg.get_body(preferencelist=("html", "plain"))
        if part is None:
            return "text", "(no text or HTML body)"
        content = part.get_content()
    except Exception as exc:  # noqa: BLE001 - a malformed message is shown as such, not as a 500
        return "text", f"(the message could not be parsed: {exc})"
    if not isinstance(content, str):
        return "text", "(the body is not text)"
    return ("html" if part.get_content_subtype() == "html" else "text"), content


def render_body(raw: bytes) -> Response:
    kind, content = pick_body(raw)
    if kind == "text":
        content = ("<!doctype html><meta charset='utf-8'><pre style='white-space:pre-wrap;font:14px monospace'>"
                   + escape(content) + "</pre>")
    return Response(content, media_type="text/html; charset=utf-8",
                    headers={"Content-Security-Policy": BODY_CSP, "X-Frame-Options": "SAMEORIGIN",
                             "Cache-Control": "no-store"})
