"""Session states, the per-mailbox selection and the command error, shared by the command modules."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from dovetail.storage.api import Mailbox


class State(enum.Enum):
    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


ANY = frozenset({State.NOT_AUTHENTICATED, State.AUTHENTICATED, State.SELECTED})
AUTH = frozenset({State.AUTHENTICATED, State.SELECTED})
SEL = frozenset({State.SELECTED})
NOAUTH = frozenset({State.NOT_AUTHENTICATED})


class CommandError(Exception):
    """A command fails with a tagged NO (or BAD) and a response code."""

    def __init__(self, text: str, code: str | None = None, status: str = "NO") -> None:
        super().__init__(text)
        self.text = text
        self.code = code
        self.status = status


@dataclass
class Selected:
    mailbox: Mailbox
    readonly: bool
    watcher: Any = None
    saved: frozenset[int] | None = None  # SEARCHRES "$", as UIDs
    contexts: dict[str, Any] = field(default_factory=dict)  # CONTEXT=SEARCH live searches by tag
