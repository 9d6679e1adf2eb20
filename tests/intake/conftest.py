from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.clamav_server import ClamavMilter
from tests.dnsserver import LoopbackDNS
from tests.rspamd_server import RspamdServer
from tests.support import require_tool


@pytest.fixture(scope="session")
def session_dns() -> Iterator[LoopbackDNS]:
    with LoopbackDNS() as server:
        yield server


@pytest.fixture(scope="session")
def rspamd(tmp_path_factory: pytest.TempPathFactory, session_dns: LoopbackDNS) -> Iterator[RspamdServer]:
    """One private rspamd for the session (its first start compiles rules: up to a minute)."""
    require_tool("rspamd")
    with RspamdServer(tmp_path_factory.mktemp("rspamd"), session_dns.port) as server:
        yield server


@pytest.fixture(scope="session")
def clamav(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClamavMilter]:
    """clamd and clamav-milter with a signature of their own for EICAR (none can be downloaded here)."""
    require_tool(shutil.which("clamd") or "/usr/sbin/clamd", shutil.which("clamav-milter") or "/usr/sbin/clamav-milter")
    with ClamavMilter(tmp_path_factory.mktemp("clamav")) as server:
        yield server
