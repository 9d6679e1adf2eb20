"""SMTP replies: a code, an RFC 3463 enhanced status code and text, rendered single- or multi-line.

One type for every reply so the engine, the backend and the logs agree on what was said.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reply:
    """An SMTP reply; ``text`` may hold several lines (``\\n``-separated) for a multi-line reply."""

    code: int
    enhanced: str = ""
    text: str = ""

    def __post_init__(self) -> None:
        if not 200 <= self.code <= 599:
            raise ValueError(f"reply code out of range: {self.code}")

    @property
    def is_positive(self) -> bool:
        """2xx and 3xx: the command was accepted (or the server waits for more)."""
        return self.code < 400

    @property
    def is_error(self) -> bool:
        return self.code >= 400

    @property
    def closes(self) -> bool:
        """421 means the server closes the channel (RFC 5321 §3.8); 221 answers QUIT."""
        return self.code in (221, 421)

    def lines(self) -> list[str]:
        parts = self.text.split("\n") if self.text else [""]
        prefix = f"{self.enhanced} " if self.enhanced else ""
        return [prefix + p for p in parts]

    def render(self) -> bytes:
        """Wire form: ``250-first`` continuation lines, ``250 last``; CR and LF in text never leak."""
        text = self.text
        if "\n" not in text and "\r" not in text:  # the common single-line reply
            if self.enhanced:
                return f"{self.code} {self.enhanced} {text}\r\n".encode()
            return f"{self.code} {text}\r\n".encode()
        lines = [ln.replace("\r", " ") for ln in self.lines()]
        out = []
        for i, line in enumerate(lines):
            sep = " " if i == len(lines) - 1 else "-"
            out.append(f"{self.code}{sep}{line}\r\n")
        return "".join(out).encode("utf-8")

    def __str__(self) -> str:
        return " ".join(str(x) for x in (self.code, self.enhanced, self.text.replace("\n", " ")) if x != "")
