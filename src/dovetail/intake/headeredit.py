"""Edits of a message's header block as content filters ask for them (add, insert, change, delete).

Works on the raw bytes so that every field the filter did not touch is stored exactly as received;
the stdlib ``email`` package would re-fold and re-encode the fields it parses.
"""

from __future__ import annotations

from collections.abc import Iterable


def split_fields(head: bytes) -> list[bytes]:
    """The header block as whole fields, continuation lines and line break included."""
    out: list[bytes] = []
    for line in head.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and out:
            out[-1] += line
        elif line.strip():
            out.append(line)
    return out


def field_name(field: bytes) -> str:
    return field.split(b":", 1)[0].strip().decode("ascii", "replace").lower()


def eol_of(head: bytes) -> bytes:
    return b"\r\n" if b"\r\n" in head or not head else b"\n"


def make_field(name: str, value: str, eol: bytes) -> bytes:
    """``Name: value`` with the filter's folding kept (its lines joined by ``eol``)."""
    lines = value.replace("\r\n", "\n").split("\n")
    return f"{name}: {lines[0]}".encode("utf-8", "surrogateescape") + b"".join(
        eol + line.encode("utf-8", "surrogateescape") for line in lines[1:]) + eol


def add(fields: list[bytes], name: str, value: str, eol: bytes) -> None:
    fields.append(make_field(name, value, eol))


def insert(fields: list[bytes], index: int, name: str, value: str, eol: bytes) -> None:
    fields.insert(min(max(index, 0), len(fields)), make_field(name, value, eol))


def change(fields: list[bytes], index: int, name: str, value: str, eol: bytes) -> None:
    """Replace (or with an empty value delete) the ``index``-th field called ``name``, 1-based; a
    missing one is added, as Sendmail does."""
    seen = 0
    for i, field in enumerate(fields):
        if field_name(field) == name.lower():
            seen += 1
            if seen == max(index, 1):
                if value.strip():
                    fields[i] = make_field(name, value, eol)
                else:
                    del fields[i]
                return
    if value.strip():
        fields.append(make_field(name, value, eol))


def remove(fields: list[bytes], names: Iterable[str]) -> int:
    """Drop every field with one of ``names``; returns how many went."""
    lowered = {n.lower() for n in names}
    kept = [f for f in fields if field_name(f) not in lowered]
    removed = len(fields) - len(kept)
    fields[:] = kept
    return removed
