"""Mailbox storage: the API (:mod:`dovetail.storage.api`) and a factory for the Maildir++ backend."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dovetail.storage.api import MailStorage


def open_storage(root: Path | str, *, create: bool = True) -> MailStorage:
    """The storage for one user's Maildir++ root, created when missing (with ``create=False``
    nothing is touched until a delivery writes: for quota checks and usage figures). May block on disk."""
    from dovetail.maildir.storage import MaildirStorage

    return MaildirStorage(Path(root), create=create)


@contextmanager
def deliveries_together() -> Iterator[None]:
    """Several ``deliver()`` calls of one thread made durable together: inside the block each returns with
    its copy written, flushed and named, and leaving the block returns once every copy is on stable
    storage (raising OSError when one is not). One message for several mailboxes then waits for one
    journal commit of the folders, not one per copy."""
    from dovetail.maildir.storage import syncs_together

    with syncs_together():
        yield


__all__ = ["MailStorage", "deliveries_together", "open_storage"]
