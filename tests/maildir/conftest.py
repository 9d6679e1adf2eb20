"""Fixtures shared by the Maildir storage tests."""

from __future__ import annotations

import pytest

from dovetail.maildir import folder as folder_mod
from dovetail.maildir import mailbox as mailbox_mod


@pytest.fixture
def clock(monkeypatch):
    """Wall-clock time held still, so that the folder's fresh stamps stay trusted until the test moves
    it on (``clock[0] += ...``) and the views' quiet check applies."""
    now = [folder_mod.time.time()]
    monkeypatch.setattr(folder_mod.time, "time", lambda: now[0])
    monkeypatch.setattr(mailbox_mod.time, "time", lambda: now[0])
    return now
