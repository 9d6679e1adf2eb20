from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dovetail.mime.imapdata import Atom, body_to_imap, envelope_to_imap, to_imap
from tests.mime.imap_values import parse


def test_scalars() -> None:
    assert to_imap(None) == b"NIL"
    assert to_imap(42) == b"42"
    assert to_imap("plain") == b'"plain"'
    assert to_imap('a "q" \\ b') == b'"a \\"q\\" \\\\ b"'
    assert to_imap(Atom("\\Seen")) == b"\\Seen"
    assert to_imap([]) == b"()"


def test_literals_for_crlf_8bit_and_nul() -> None:
    assert to_imap("a\r\nb") == b"{4}\r\na\r\nb"
    assert to_imap("é") == b"{2}\r\n\xc3\xa9"
    assert to_imap(b"x\x00y") == b"{3}\r\nx\x00y"
    raw = b"\xff\xfe"
    assert to_imap(raw.decode("utf-8", "surrogateescape")) == b"{2}\r\n\xff\xfe"


def test_rejects_unknown_types() -> None:
    with pytest.raises(TypeError):
        to_imap(True)
    with pytest.raises(TypeError):
        to_imap(1.5)


def test_address_lists_and_multipart_bodies_have_no_separators() -> None:
    env = [None, "s", [["a", None, "b", "c"], [None, None, "d", "e"]], None, None, None, None, None, None, None]
    assert envelope_to_imap(env) == b'(NIL "s" (("a" NIL "b" "c")(NIL NIL "d" "e")) NIL NIL NIL NIL NIL NIL NIL)'
    leaf = ["text", "plain", ["charset", "us-ascii"], None, None, "7bit", 1, 1]
    assert body_to_imap([leaf, leaf, "mixed"]).count(b")(") == 1


_values = st.recursive(
    st.none() | st.integers(0, 2**32) | st.binary(max_size=30),
    lambda inner: st.lists(inner, max_size=5),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(_values)
def test_roundtrip_through_a_parser(value) -> None:
    assert parse(to_imap(value)) == value
