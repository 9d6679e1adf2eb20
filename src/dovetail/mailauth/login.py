"""Mailbox logins against the directory, shared by IMAP and submission."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ..directory import Directory
from .accounts import Account
from .passwords import VerifyCache

_DUMMY_HASH = "{SSHA512}" + "A" * 100  # compared against for unknown users, so they cost about as much


class DirectoryAuthenticator:
    """Checks ``user@domain`` + password; the account's root is its Maildir under ``mail/``."""

    def __init__(self, directory: Directory, mail_root: Path, cache: VerifyCache | None = None) -> None:
        self.directory = directory
        self.mail_root = mail_root
        self.cache = cache or VerifyCache()

    async def authenticate(self, username: str, password: str, client_ip: str) -> Account | None:
        return await asyncio.to_thread(self._check, username, password)

    def _check(self, username: str, password: str) -> Account | None:
        """The lookup and the password check, in one trip to a worker thread."""
        row = self.directory.mailbox_get(username)
        if row is None or not row["enabled"]:
            self.cache.verify(_DUMMY_HASH, password)
            return None
        if not self.cache.verify(row["password_hash"], password):
            return None
        return self._account(row)

    async def lookup(self, username: str) -> Account | None:
        """The enabled account ``username`` without a password check (a login proxied from another node)."""
        row = await asyncio.to_thread(self.directory.mailbox_get, username)
        return self._account(row) if row is not None and row["enabled"] else None

    def _account(self, row: dict) -> Account:
        address = f"{row['local_part']}@{row['domain']}"
        moving = "Mailbox is being moved to another node, try again shortly." if row.get("paused") else ""
        return Account(address, self.mail_root / row["tenant"] / row["domain"] / row["local_part"],
                       int(row["quota_bytes"] or 0), row.get("home_node"), unavailable=moving,
                       tenant=row["tenant"])
