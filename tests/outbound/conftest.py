"""Fixtures of the outbound tests: a loopback DNS server and a directory with two tenants."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from .dnsserver import LoopbackDNS


@pytest.fixture
def dns_server() -> Iterator[LoopbackDNS]:
    with LoopbackDNS() as server:
        yield server


@dataclass
class World:
    root: Path
    engine: Engine
    directory: object

    @property
    def dkim_dir(self) -> Path:
        return self.root / "dkim"


def make_world(root: Path, url: str) -> World:
    from dovetail.db import make_engine, migrate
    from dovetail.directory import Directory
    from dovetail.mailauth.passwords import hash_password

    root.mkdir(parents=True, exist_ok=True)
    engine = make_engine(url)
    migrate(engine)
    directory = Directory(engine)
    directory.tenant_add("acme")
    directory.tenant_add("globex")
    directory.domain_add("acme.example", "acme")
    directory.domain_add("news.acme.example", "acme")
    directory.domain_add("globex.example", "globex")
    directory.mailbox_add("alice@acme.example", hash_password("alice-pw"))
    directory.mailbox_add("gina@globex.example", hash_password("gina-pw"))
    return World(root, engine, directory)


@pytest.fixture
def world(tmp_path: Path) -> World:
    """SQLite-backed directory: tenants acme (acme.example, news.acme.example) and globex (globex.example)."""
    return make_world(tmp_path / "data", f"sqlite:///{tmp_path / 'dovetail.db'}")
