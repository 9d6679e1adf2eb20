"""Who may log in: the ``Authenticator`` a protocol engine asks, and the ``Account`` it answers with.

IMAP and submission both ask the same question (user name and password from a client address); the
directory-backed answer is :class:`dovetail.mailauth.login.DirectoryAuthenticator`.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Account:
    username: str
    mail_root: Path
    quota_bytes: int = 0  # what all the account's mailboxes may hold; 0: no limit
    home_node: str | None = None  # the cluster node holding its Maildirs; None: a single installation
    # Why the account cannot be served now though its password is right (its tenant is being moved to
    # another node): the login is answered NO [UNAVAILABLE] with this text. Empty: served.
    unavailable: str = ""
    tenant: str = ""  # the directory's tenant of the account (empty: not from the directory)


class Authenticator(Protocol):
    async def authenticate(self, username: str, password: str, client_ip: str) -> Account | None: ...


class AccountLookup(Protocol):
    """The account of a user name without a password check: for a login another node of the cluster
    already checked and proxied here (:mod:`dovetail.mailauth.proxytoken` proves that it did)."""

    async def lookup(self, username: str) -> Account | None: ...


class DictAuthenticator:
    """Plain-text passwords in a dict; for tests and tiny setups. Each user's root is ``base/<user>``."""

    def __init__(self, users: dict[str, str], base: Path) -> None:
        self.users = users
        self.base = Path(base)

    async def authenticate(self, username: str, password: str, client_ip: str) -> Account | None:
        expected = self.users.get(username)
        if expected is None or not hmac.compare_digest(expected.encode(), password.encode()):
            return None
        return Account(username, self.base / username)

    async def lookup(self, username: str) -> Account | None:
        return Account(username, self.base / username) if username in self.users else None
