"""Mailbox storage: the API (:mod:`dovetail.storage.api`) and a factory for the Maildir++ backend."""

from __future__ import annotations

from pathlib import Path

from dovetail.storage.api import MailStorage


def open_storage(root: Path | str, *, create: bool = True) -> MailStorage:
    """The storage for one user's Maildir++ root, created when missing (with ``create=False``
    nothing is touched until a delivery writes: for quota checks and usage figures). May block on disk."""
    from dovetail.maildir.storage import MaildirStorage

    return MaildirStorage(Path(root), create=create)


__all__ = ["MailStorage", "open_storage"]
