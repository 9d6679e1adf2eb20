"""Fixtures shared by the whole suite: data directories and databases (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[object]:
    from .pgcluster import PgCluster

    cluster = PgCluster()
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database on each engine the directory supports."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'dovetail.db'}"
    return request.getfixturevalue("pg_cluster").new_database()


@pytest.fixture
def data_dir(tmp_path: Path, database_url: str) -> Path:
    """An initialised data directory whose database is ``database_url``."""
    from dovetail import config, datadir

    root = tmp_path / "data"
    root.mkdir()
    (root / config.CONFIG_NAME).write_text(config.default_file_text())
    if not database_url.startswith("sqlite"):
        config.set_value(root, "database.url", database_url)
    datadir.init(root)
    return root
