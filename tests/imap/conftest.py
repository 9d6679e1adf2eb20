from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dovetail.imap.limits import Limits
from dovetail.imap.server import ImapServer
from dovetail.mailauth.accounts import DictAuthenticator
from tests.imap.imap_testkit import ServerThread, have_storage

USERS = {"alice": "wonderland", "bob": "builder"}


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., ServerThread]]:
    started: list[ServerThread] = []

    def make(limits: Limits | None = None, storage_factory: Any = None, **kw: Any) -> ServerThread:
        auth = DictAuthenticator(dict(USERS), tmp_path / "mail")
        args: dict[str, Any] = {}
        if storage_factory is not None:
            args["storage_factory"] = storage_factory
        srv = ImapServer(auth, limits=limits or Limits(auth_fail_base_delay=0.01), **args, **kw)
        st = ServerThread(srv)
        started.append(st)
        return st

    yield make
    for st in started:
        st.stop()


@pytest.fixture
def server(make_server: Callable[..., ServerThread]) -> ServerThread:
    return make_server()




STORAGE_KINDS = ["mem"] + (["maildir"] if have_storage() else [])


@pytest.fixture(params=STORAGE_KINDS)
def mail_server(request: pytest.FixtureRequest, make_server: Callable[..., ServerThread]) -> ServerThread:
    """A server with mail storage: the in-memory one, and the Maildir one once it exists."""
    if request.param == "mem":
        from tests.imap.memstore import MemStorages

        return make_server(storage_factory=MemStorages())
    return make_server()
