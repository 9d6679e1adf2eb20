"""A ``SearchableMessage`` built from raw RFC 5322 bytes, shared by the SEARCH/SORT/THREAD tests."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import re
from dataclasses import dataclass, field

from dovetail.imap.search import SearchableMessage
from dovetail.mime.text import fold_case

_FOLD = re.compile(rb"\r?\n(?=[ \t])")


@dataclass
class Msg:
    raw: bytes
    seq: int
    uid: int
    flags: frozenset[str] = frozenset()
    internal_date: dt.datetime = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    modseq: int = 1
    text_calls: int = 0
    _headers: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        head = self.raw.split(b"\r\n\r\n", 1)[0]
        for line in _FOLD.sub(b"", head).split(b"\r\n"):
            name, sep, value = line.partition(b":")
            if sep:
                self._headers.append((name.decode().strip().lower(), value.decode("utf-8", "replace").strip()))

    @property
    def size(self) -> int:
        return len(self.raw)

    def header(self, name: str) -> list[str]:
        name = name.lower()
        return [v for n, v in self._headers if n == name]

    def header_bytes(self) -> bytes:
        return self.raw.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"

    def text(self) -> str:
        self.text_calls += 1
        msg = email.message_from_bytes(self.raw, policy=email.policy.default)
        parts = [p.get_content() for p in msg.walk() if p.get_content_maintype() == "text"]
        return "\n".join(parts)

    def folded_text(self) -> str:
        return fold_case(self.text())


def make(seq: int, *, uid: int | None = None, body: str = "hello\r\n", flags: set[str] | None = None,
         internal: dt.datetime | None = None, modseq: int = 1, **headers: str) -> Msg:
    lines = [f"{k.rstrip('_').replace('_', '-').title()}: {v}" for k, v in headers.items()]
    lines = [ln.replace("Message-Id", "Message-ID") for ln in lines]
    raw = ("\r\n".join(lines) + "\r\n\r\n" + body).encode()
    return Msg(raw, seq, uid if uid is not None else seq * 10, frozenset(flags or ()),
               internal or dt.datetime(2024, 1, seq % 28 + 1, 12, tzinfo=dt.UTC), modseq)


def test_msg_satisfies_protocol() -> None:
    m = make(1, subject="=?utf-8?q?caf=C3=A9?=", from_="a@b.c")
    assert isinstance(m, SearchableMessage)
    assert m.header("SUBJECT") == ["=?utf-8?q?caf=C3=A9?="]
    assert m.header("from") == ["a@b.c"]
    assert "hello" in m.text()
