"""Fixtures shared by the end-to-end tests of the master."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .harness import RelaySink, relay_sink


@pytest.fixture
def sink() -> Iterator[tuple[RelaySink, int]]:
    """A relay sink on loopback and its port (see ``harness.relay_sink``)."""
    with relay_sink() as made:
        yield made
