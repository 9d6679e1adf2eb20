"""Every storage error kind has its IMAP answer: a response code with ``NO``, or ``BAD``."""

from __future__ import annotations

from dovetail.imap.storage_errors import RESPONSE_CODES, is_bad, response_code
from dovetail.storage.api import (
    ErrorKind,
    InvalidSection,
    MailboxInUse,
    MailboxNotFound,
    OverQuota,
    StorageError,
)


def test_every_kind_has_a_response_code() -> None:
    assert set(RESPONSE_CODES) == set(ErrorKind)
    assert response_code(OverQuota(10, 5)) == "OVERQUOTA"
    assert response_code(MailboxNotFound("x")) == "NONEXISTENT"
    assert response_code(MailboxInUse("x")) == "INUSE"
    assert response_code(StorageError("x")) == "SERVERBUG"


def test_only_a_malformed_section_is_bad() -> None:
    assert is_bad(InvalidSection("x"))
    others = [k for k in ErrorKind if k is not ErrorKind.INVALID_SECTION]
    assert not any(is_bad(type("E", (StorageError,), {"kind": k})()) for k in others)
