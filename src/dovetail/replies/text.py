"""Small text helpers shared by the registry and the pipeline: Message-IDs, subjects, HTML to text."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

_MSGID_RE = re.compile(r"<([^<>\s]{1,990})>")
_SUBJECT_PREFIX = re.compile(
    r"^\s*(?:(?:re|r|aw|sv|vs|antw|antwort|ref|rif|res|odp|wg|fw|fwd|tr|enc|doorst|rv|fs|vb)"
    r"(?:\s*\[\d+\]|\s*\(\d+\))?\s*[:：]\s*|\[[^\]]{0,40}\]\s*)+",
    re.IGNORECASE,
)


def normalize_msgid(value: str | None) -> str:
    """A Message-ID without angle brackets or whitespace; ``""`` when there is none."""
    if not value:
        return ""
    m = _MSGID_RE.search(value)
    text = m.group(1) if m else value.strip().strip("<>").strip()
    return text if text and not re.search(r"\s", text) and len(text) <= 990 else ""


def msgid_list(value: str | None, limit: int = 100) -> list[str]:
    """All Message-IDs in an In-Reply-To or References header, in order, at most ``limit``."""
    if not value:
        return []
    found = [m.group(1) for m in _MSGID_RE.finditer(value)]
    if not found:
        one = normalize_msgid(value)
        found = [one] if one else []
    return found[-limit:]


def subject_key(subject: str | None) -> str:
    """A subject without reply/forward prefixes and list tags, case- and space-folded."""
    if not subject:
        return ""
    text = _SUBJECT_PREFIX.sub("", subject)
    return re.sub(r"\s+", " ", text).strip().casefold()


def thread_title(subject: str | None) -> str:
    """A reply's subject as the title of its thread: without ``Re:``/``AW:``/list prefixes, spaces folded."""
    if not subject:
        return ""
    return re.sub(r"\s+", " ", _SUBJECT_PREFIX.sub("", subject)).strip()[:2000]


class _TextExtractor(HTMLParser):
    _BLOCK = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "table", "hr"}
    _SKIP = {"style", "script", "head", "title"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skip += 1
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_to_text(markup: str) -> str:
    """Readable text of an HTML body: block elements become line breaks, styles and scripts vanish."""
    parser = _TextExtractor()
    try:
        parser.feed(markup)
        parser.close()
    except Exception:  # noqa: BLE001 - HTMLParser is lenient; keep whatever was read
        pass
    text = html.unescape("".join(parser.parts)).replace("\xa0", " ")
    lines = [re.sub(r"[ \t]+", " ", line).strip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
