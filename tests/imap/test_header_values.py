"""SEARCH's one-field header lookup agrees with the full header parse it stands in for."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dovetail.imap.commands.search_messages import _header_values, _parse_headers

_field = st.tuples(st.sampled_from(["From", "from", "TO", "Subject", "Subject ", "X-A", "X-AB"]),
                   st.text(max_size=20)).map(lambda t: f"{t[0]}:{t[1]}")
_line = st.one_of(_field, st.text(max_size=20).map(lambda t: " " + t), st.text(max_size=20).map(lambda t: "\t" + t),
                  st.text(max_size=20))


@settings(max_examples=200, deadline=None)
@given(st.lists(_line, min_size=1, max_size=8), st.sampled_from(["\r\n", "\n"]))
def test_matches_full_parse(lines: list[str], eol: str) -> None:
    lines = [x.replace("\r", "").replace("\n", "") for x in lines]
    lines[0] = lines[0].lstrip(" \t")  # a header block does not start with a continuation
    raw = (eol.join(lines) + eol + eol).encode()
    parsed = _parse_headers(raw)
    for name in ("from", "to", "subject", "x-a"):
        assert _header_values(raw, name) == parsed.get(name, [])


def test_folded_and_repeated_fields() -> None:
    raw = b"Received: a\r\nTo: x@example.org,\r\n\ty@example.org\r\nSubject: one\r\nto: z@example.org\r\n\r\n"
    assert _header_values(raw, "to") == ["x@example.org,\ty@example.org", "z@example.org"]
    assert _header_values(raw, "cc") == []


def test_indented_line_after_a_stray_line_is_no_field() -> None:
    raw = b"stray\r\n From: x@example.org\r\n\r\n"
    assert _header_values(raw, "from") == _parse_headers(raw).get("from", []) == []
