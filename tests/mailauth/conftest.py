"""Fixtures of the sender-authentication tests: a loopback DNS server and our resolver pointed at it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dovetail.mailauth.dns import Resolver
from tests.dnsserver import LoopbackDNS


@pytest.fixture
def dns_server() -> Iterator[LoopbackDNS]:
    with LoopbackDNS() as server:
        yield server


@pytest.fixture
def resolver(dns_server: LoopbackDNS) -> Resolver:
    return Resolver([dns_server.nameserver], timeout=1.0)
