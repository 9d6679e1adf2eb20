from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dovetail.storage.api import InvalidMailboxName
from dovetail.storage.names import decode_mutf7, encode_mutf7, from_disk, normalize, pattern_regex, to_disk


def test_known_mutf7_values() -> None:
    # values Dovecot writes on disk / RFC 3501 examples
    assert encode_mutf7("Ünïcode") == "&ANw-n&AO8-code"
    assert encode_mutf7("~peter/mail/台北/日本語") == "~peter/mail/&U,BTFw-/&ZeVnLIqe-"
    assert encode_mutf7("a&b") == "a&-b"
    assert decode_mutf7("&ZeVnLIqe-") == "日本語"
    assert decode_mutf7("Entw&APw-rfe") == "Entwürfe"


@pytest.mark.parametrize("bad", ["&", "&Jjo", "&AGE-", "é", "&Jj-", "&2D0-"])
def test_malformed_mutf7_is_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        decode_mutf7(bad)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40))
def test_mutf7_roundtrip(text: str) -> None:
    enc = encode_mutf7(text)
    assert enc.isascii()
    assert decode_mutf7(enc) == text


@pytest.mark.parametrize(
    "bad",
    ["", "..", "a/../b", "/abs", "a//b", "a/", ".hidden", "a/.b", "a.b", "tab\there", "nul\x00", "x" * 300,
     "a/" * 20 + "a", "~user", "back\\slash", "wild*", "wild%", "\ud800"],
)
def test_invalid_names(bad: str) -> None:
    with pytest.raises(InvalidMailboxName):
        normalize(bad)


def test_inbox_is_case_insensitive() -> None:
    assert normalize("inbox") == "INBOX"
    assert normalize("Inbox/Sub") == "INBOX/Sub"
    assert to_disk("iNbOx") == "."


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_validation_never_escapes_the_root(name: str) -> None:
    try:
        canon = normalize(name)
    except InvalidMailboxName:
        return
    disk = to_disk(canon)
    assert "/" not in disk and "\x00" not in disk
    assert disk == "." or (disk.startswith(".") and ".." not in disk)
    if disk != ".":
        assert from_disk(disk) == canon


def test_list_patterns() -> None:
    rx = pattern_regex("", "%")
    assert rx.match("Sent") and not rx.match("a/b")
    assert pattern_regex("", "*").match("a/b/c")
    assert pattern_regex("", "inbox").match("INBOX")
    assert pattern_regex("a/", "%").match("a/b") and not pattern_regex("a/", "%").match("a/b/c")
