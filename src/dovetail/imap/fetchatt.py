"""FETCH attribute lists: ``(FLAGS BODY.PEEK[1.HEADER.FIELDS (FROM)]<0.512>)`` into ``FetchAtt``s."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from dovetail.imap.tokens import Atom, ListToken, ParseError, String, Token, parse_command

_ATT_RE = re.compile(r"^([A-Z0-9.]+)(?:\[([^\]]*)\])?(?:<(\d+)(?:\.(\d+))?>)?$", re.S)
_SIMPLE = {"FLAGS", "UID", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODYSTRUCTURE", "RFC822",
           "RFC822.HEADER", "RFC822.TEXT", "MODSEQ", "EMAILID", "THREADID", "SAVEDATE", "PREVIEW"}
_MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
_TEXTS = {"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"}


@dataclass(frozen=True)
class Section:
    part: tuple[int, ...] = ()
    text: str = ""  # "", HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT, TEXT or MIME
    fields: tuple[str, ...] = ()

    def __str__(self) -> str:
        out = ".".join(str(p) for p in self.part)
        if self.text:
            out = f"{out}.{self.text}" if out else self.text
        if self.fields:
            out += " (" + " ".join(self.fields) + ")"
        return out


@dataclass(frozen=True)
class FetchAtt:
    name: str  # BODY and BINARY with a section, BINARY.SIZE, or one of the simple items
    section: Section | None = None
    partial: tuple[int, int | None] | None = None  # (origin, length)
    peek: bool = False

    @property
    def sets_seen(self) -> bool:
        if self.name in ("RFC822", "RFC822.TEXT"):
            return True
        return self.name in ("BODY", "BINARY") and self.section is not None and not self.peek

    def response_name(self) -> str:
        """The item name in the untagged FETCH response (PEEK dropped, only the partial origin)."""
        if self.section is None:
            return self.name
        out = f"{self.name}[{self.section}]"
        if self.partial is not None and self.name != "BINARY.SIZE":
            out += f"<{self.partial[0]}>"
        return out


def parse_fetch_atts(tok: Token) -> list[FetchAtt]:
    """One atom, a macro (ALL, FAST, FULL) or a parenthesised list of attributes."""
    if isinstance(tok, Atom):
        macro = _MACROS.get(tok.value.upper())
        if macro:
            return [FetchAtt(name) for name in macro]
        return [parse_fetch_att(tok.value)]
    if isinstance(tok, ListToken):
        if not tok.items:
            raise ParseError("Empty fetch attribute list")
        out: list[FetchAtt] = []
        for item in tok.items:
            if isinstance(item, ListToken) and out and out[-1].name == "PREVIEW":
                # PREVIEW (LAZY), RFC 8970: we always have a preview to give, so LAZY changes nothing.
                if not all(isinstance(m, Atom) and m.value.upper() == "LAZY" for m in item.items):
                    raise ParseError("Unknown PREVIEW modifier")
                continue
            if not isinstance(item, Atom):
                raise ParseError("Invalid fetch attribute")
            out.append(parse_fetch_att(item.value))
        return out
    raise ParseError("Invalid fetch attribute")


def parse_fetch_att(text: str) -> FetchAtt:
    """One attribute; a short one (what clients send, again and again: ``BODY.PEEK[HEADER.FIELDS
    (From To)]`` costs a tokenizer run) parsed once per process, as a FetchAtt is immutable."""
    return _parse_known(text) if len(text) <= 256 else _parse_fetch_att(text)


@functools.lru_cache(maxsize=512)
def _parse_known(text: str) -> FetchAtt:
    return _parse_fetch_att(text)


def _parse_fetch_att(text: str) -> FetchAtt:
    m = _ATT_RE.match(text.upper())
    if not m:
        raise ParseError(f"Invalid fetch attribute {text[:40]!r}")
    name, section_text, origin, length = m.groups()
    partial = None
    if origin is not None:
        if len(origin) > 10 or length is not None and len(length) > 10:
            raise ParseError("Partial out of range")
        partial = (int(origin), int(length) if length is not None else None)
    if section_text is None:
        if partial is not None:
            raise ParseError("Partial without a section")
        if name in _SIMPLE or name == "BODY":
            return FetchAtt(name)
        raise ParseError(f"Unknown fetch attribute {name[:40]}")
    peek = False
    if name in ("BODY.PEEK", "BINARY.PEEK"):
        peek = True
        name = name[:-5]
    if name not in ("BODY", "BINARY", "BINARY.SIZE"):
        raise ParseError(f"Unknown fetch attribute {name[:40]}")
    if partial is not None and partial[1] is None:
        raise ParseError("Partial needs a length")
    raw = text[text.index("[") + 1 : text.rindex("]")]
    section = parse_section(raw)
    if name != "BODY" and section.text:
        raise ParseError("BINARY takes only a part number")
    return FetchAtt(name, section, partial, peek)


def parse_section(raw: str) -> Section:
    spec, _, rest = raw.partition(" ")
    parts: list[int] = []
    text = ""
    if spec:
        pieces = spec.split(".")
        i = 0
        while i < len(pieces) and pieces[i].isdigit():
            if not pieces[i].isascii() or int(pieces[i]) == 0 or len(pieces[i]) > 6:
                raise ParseError("Invalid section part")
            parts.append(int(pieces[i]))
            i += 1
        text = ".".join(pieces[i:]).upper()
        if text and text not in _TEXTS:
            raise ParseError("Invalid section")
        if text == "MIME" and not parts:
            raise ParseError("MIME needs a part number")
    fields: tuple[str, ...] = ()
    if text.startswith("HEADER.FIELDS"):
        if not rest:
            raise ParseError("HEADER.FIELDS needs a list")
        tokens = parse_command([b"x X " + rest.encode("ascii")]).args
        if len(tokens) != 1 or not isinstance(tokens[0], ListToken) or not tokens[0].items:
            raise ParseError("Invalid header field list")
        names = []
        for item in tokens[0].items:
            if isinstance(item, Atom):
                names.append(item.value.upper())
            elif isinstance(item, String):
                names.append(item.text().upper())
            else:
                raise ParseError("Invalid header field name")
        fields = tuple(names)
    elif rest:
        raise ParseError("Unexpected text in section")
    return Section(tuple(parts), text, fields)
