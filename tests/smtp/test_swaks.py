"""A real third-party client: swaks, plain and pipelined."""

from __future__ import annotations

import subprocess

import pytest

from ..support import require_tool
from .conftest import FileBackend, ServerThread

SWAKS = "/usr/bin/swaks"


@pytest.mark.interop
@pytest.mark.parametrize("extra", [[], ["--pipeline"], ["--protocol", "ESMTP", "--body", "line\n.dot line\n"]])
def test_swaks_session(server: ServerThread, backend: FileBackend, extra: list[str]) -> None:
    require_tool(SWAKS)
    out = subprocess.run(
        [SWAKS, "--server", f"127.0.0.1:{server.port}", "--from", "a@x.test", "--to", "b@y.test,unknown@y.test",
         "--helo", "swaks.test", "--timeout", "20", *extra],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "<** 550 5.1.1 <unknown@y.test>: Recipient address rejected" in out.stdout
    assert "<-  250 2.0.0 Ok: queued as" in out.stdout, out.stdout
    (stored,) = backend.committed
    assert [r.address for r in stored.envelope.recipients] == ["b@y.test"]
    assert stored.session.helo == "swaks.test"
    if "--body" in extra:
        assert b"\r\n\r\nline\r\n.dot line\r\n" in stored.body()  # swaks stuffed the dot, we unstuffed it
