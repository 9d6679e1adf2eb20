"""A real app over a real data directory and database (SQLite and PostgreSQL via ``database_url``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from dovetail import config
from dovetail.db import make_engine, migrate
from dovetail.directory import Directory
from dovetail.web import auth
from dovetail.web.app import create_app

ADMIN_EMAIL = "root@admin.example"
ADMIN_PASSWORD = "correct horse battery"


@dataclass
class WebEnv:
    client: TestClient
    cfg: config.Config
    directory: Directory
    engine: object
    admin_token: str

    def bearer(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}


def make_env(data_dir: Path) -> Iterator[WebEnv]:
    cfg = config.load(data_dir)
    engine = make_engine(cfg.database_url)
    migrate(engine)
    app = create_app(cfg, engine, flush_interval=3600)
    admin = auth.token_add(engine, "admin", name="tests")
    auth.user_add(engine, ADMIN_EMAIL, ADMIN_PASSWORD)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield WebEnv(client, cfg, Directory(engine), engine, admin.token)
    engine.dispose()


@pytest.fixture
def web(data_dir: Path) -> Iterator[WebEnv]:
    """On both database engines."""
    yield from make_env(data_dir)


@pytest.fixture
def web_sqlite(tmp_path: Path) -> Iterator[WebEnv]:
    """SQLite only, for the slower suites (matrix, schemathesis, browser)."""
    from dovetail import datadir

    root = tmp_path / "data"
    root.mkdir()
    (root / config.CONFIG_NAME).write_text(config.default_file_text())
    datadir.init(root)
    yield from make_env(root)


DOCS_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Where the browser tests save their screenshots: a temporary folder, or the README's
    ``docs/screenshots/`` when ``UPDATE_SCREENSHOTS=1`` (so a test run leaves the tree as it was)."""
    target = DOCS_SCREENSHOTS if os.environ.get("UPDATE_SCREENSHOTS") == "1" else tmp_path / "screenshots"
    target.mkdir(parents=True, exist_ok=True)
    return target
