"""Shared test helpers: which peer tools exist, and skipping only outside CI."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _missing(what: str) -> None:
    """Skip for a missing peer, except in CI where its absence is a failure."""
    if IN_CI:
        pytest.fail(f"CI=true but {what} is not installed (see .ci/run)")
    pytest.skip(f"{what} not installed")


def require_tool(*names: str) -> None:
    """Skip when a peer tool is missing, except in CI where its absence is a failure."""
    missing = [n for n in names if not (shutil.which(n) or os.path.exists(n))]
    if missing:
        _missing(", ".join(missing))


def require_swaks_tls() -> None:
    """swaks and what its ``--tls`` needs: Perl's IO::Socket::SSL (libio-socket-ssl-perl, libnet-ssleay-perl)."""
    require_tool("swaks", "perl")
    probe = subprocess.run(["perl", "-MIO::Socket::SSL", "-e1"], capture_output=True, timeout=30)
    if probe.returncode != 0:
        _missing("Perl's IO::Socket::SSL (for swaks --tls)")
