"""Fixtures of the replies tests: a migrated database with two tenants, and the engine's service."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from dovetail.db import make_engine, migrate
from dovetail.directory import Directory
from dovetail.replies.service import RepliesService
from dovetail.replies.tokens import load_secret
from dovetail.sealing import Sealer


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url)
    migrate(eng)
    directory = Directory(eng)
    directory.tenant_add("acme")
    directory.tenant_add("other")
    yield eng
    eng.dispose()


@pytest.fixture
def secret(tmp_path: Path) -> bytes:
    return load_secret(tmp_path / "data")


@pytest.fixture
def service(engine: Engine, secret: bytes) -> RepliesService:
    # Receivers listen on 127.0.0.1; IMAP-source passwords are sealed as in a data directory.
    return RepliesService(engine, secret, allow_private_webhooks=True, sealer=Sealer(os.urandom(32)))
