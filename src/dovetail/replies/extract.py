"""The new text of a reply, without quoted history and signature, in several languages.

Plain text goes through ``mail-parser-reply`` (quote headers and signatures in many languages).
HTML-only replies are first cut at the quote with ``quotequail`` (Gmail/Outlook/Apple quote
blocks), turned into text, then go the same way.
"""

from __future__ import annotations

import re

import quotequail
from mailparser_reply import EmailReplyParser

from .text import html_to_text

LANGUAGES = ["en", "de", "fr", "es", "nl", "it", "pt", "sv", "pl"]
MAX_INPUT = 200_000
_parser: EmailReplyParser | None = None

# Quote headers the library misses: Outlook's separator block and Apple/Thunderbird one-liners.
_EXTRA_CUTS = re.compile(
    r"^(?:-{2,}\s*(?:Original Message|Ursprüngliche Nachricht|Message d'origine|Mensaje original|"
    r"Oorspronkelijk bericht|Messaggio originale)\s*-{2,}|_{10,}|"
    r"(?:From|Von|De|Van|Da|Od|Från):\s.+\n(?:.*\n){0,3}?(?:Sent|Gesendet|Envoyé|Enviado|Verzonden|Inviato|Date|"
    r"Datum|Data|Skickat):\s.+|"
    r"On .{5,200}(?:wrote|schrieb|a écrit|escribió|schreef):?|"
    r"Am .{5,200} schrieb .{1,200}:|Le .{5,200} a écrit\s?:|El .{5,200} escribió:|Op .{5,200} schreef .{1,200}:)"
    r"\s*$",
    re.M,
)


def _get_parser() -> EmailReplyParser:
    global _parser
    if _parser is None:
        _parser = EmailReplyParser(languages=LANGUAGES)
    return _parser


def strip_text(text: str) -> str:
    """The newest part of a plain-text reply, without quotes and signature."""
    text = text[:MAX_INPUT].replace("\r\n", "\n")
    m = _EXTRA_CUTS.search(text)
    if m:
        text = text[: m.start()]
    try:
        mail = _get_parser().read(text=text)
        body = mail.replies[0].body if mail.replies else text
    except Exception:  # noqa: BLE001 - a library failure must not lose the reply; fall back to cut text
        body = text
    lines = [ln for ln in body.split("\n") if not ln.startswith(">")]
    return _strip_valediction("\n".join(lines).strip())


_VALEDICTION = re.compile(
    r"^\s*(best( regards| wishes)?|regards|kind regards|warm regards|cheers|thanks|thank you|many thanks|"
    r"sincerely|mit freundlichen gr(ü|ue)(ß|ss)en|viele gr(ü|ue)(ß|ss)e|beste gr(ü|ue)(ß|ss)e|gru(ß|ss)|lg|"
    r"cordialement|bien (à vous|cordialement)|salutations|bonne journée|saludos|un saludo|atentamente|"
    r"groeten|met vriendelijke groet(en)?|hartelijke groet(en)?|cordiali saluti|saluti|"
    r"sent from my (iphone|ipad|android|mobile)|envoyé de mon iphone|von meinem iphone gesendet)[,.!]?\s*$",
    re.I,
)


def _strip_valediction(text: str) -> str:
    """Cut a closing formula and the few name lines under it, which the library keeps in some languages."""
    lines = text.split("\n")
    for i in range(max(1, len(lines) - 6), len(lines)):
        if _VALEDICTION.match(lines[i]) and any(ln.strip() for ln in lines[:i]):
            tail = [ln for ln in lines[i + 1:] if ln.strip()]
            if len(tail) <= 4 and all(len(ln) <= 60 for ln in tail):
                return "\n".join(lines[:i]).strip()
    return text


def strip_html(markup: str) -> str:
    """The newest part of an HTML reply as text."""
    markup = markup[: MAX_INPUT * 5]
    try:
        unwrapped = quotequail.unwrap_html(markup)
    except Exception:  # noqa: BLE001 - malformed HTML: use the whole body
        unwrapped = None
    top = unwrapped.get("html_top") if unwrapped else None
    return strip_text(html_to_text(top if top else markup))


def reply_text(text: str, html: str) -> str:
    if text.strip():
        return strip_text(text)
    if html.strip():
        return strip_html(html)
    return ""
