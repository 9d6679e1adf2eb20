"""Shared test helpers: which peer tools exist, and skipping only outside CI."""

from __future__ import annotations

import os
import shutil

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_tool(*names: str) -> None:
    """Skip when a peer tool is missing, except in CI where its absence is a failure."""
    missing = [n for n in names if not (shutil.which(n) or os.path.exists(n))]
    if missing:
        if IN_CI:
            pytest.fail(f"CI=true but {', '.join(missing)} is not installed (see .ci/run)")
        pytest.skip(f"{', '.join(missing)} not installed")
