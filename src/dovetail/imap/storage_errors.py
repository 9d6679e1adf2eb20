"""Storage error kinds as IMAP answers: which response code goes with ``NO``, and which kinds are ``BAD``.

The storage knows nothing of IMAP; this table is the one place where its errors become protocol.
"""

from __future__ import annotations

from dovetail.storage.api import ErrorKind, StorageError

RESPONSE_CODES: dict[ErrorKind, str] = {
    ErrorKind.NOT_FOUND: "NONEXISTENT",  # APPEND/COPY/MOVE targets answer [TRYCREATE] in their commands
    ErrorKind.EXISTS: "ALREADYEXISTS",
    ErrorKind.NOT_ALLOWED: "CANNOT",
    ErrorKind.INVALID_NAME: "CANNOT",
    ErrorKind.EXPUNGED: "EXPUNGEISSUED",
    ErrorKind.IN_USE: "INUSE",
    ErrorKind.READ_ONLY: "CANNOT",
    ErrorKind.TOO_LARGE: "TOOBIG",
    ErrorKind.INVALID_FLAG: "CLIENTBUG",
    ErrorKind.INVALID_SECTION: "CLIENTBUG",
    ErrorKind.OVER_QUOTA: "OVERQUOTA",
    ErrorKind.SERVER_BUG: "SERVERBUG",
}

#: Kinds that say the command itself was malformed: the answer is ``BAD``, not ``NO``.
BAD_KINDS: frozenset[ErrorKind] = frozenset({ErrorKind.INVALID_SECTION})


def response_code(error: StorageError) -> str:
    """The RFC 5530 response code for a storage error (``SERVERBUG`` for an unknown kind)."""
    return RESPONSE_CODES.get(error.kind, "SERVERBUG")


def is_bad(error: StorageError) -> bool:
    """Whether the IMAP answer to ``error`` is ``BAD``."""
    return error.kind in BAD_KINDS
