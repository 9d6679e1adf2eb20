"""The transfer client treats a peer's malformed answer as an unreachable node, never as a crash.

A real HTTP server on loopback answers what a broken node could send; the web's usage column turns
:class:`Unreachable` into *unknown*, so anything else would become a 500 on every page of the tenant.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from dovetail.directory.nodes import Node
from dovetail.move.mover import TransferClient, Unreachable


class _Peer(BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture()
def peer() -> Iterator[tuple[ThreadingHTTPServer, TransferClient]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Peer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    node = Node("b", ("mailbox",), None, None, "active", transfer=f"127.0.0.1:{server.server_port}")
    client = TransferClient(node, "secret", timeout=5)
    try:
        yield server, client
    finally:
        client.close()
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("body", [
    b"<html>not json</html>",
    b"[1, 2]",
    b'{"node": "b"}',
    b'{"mailboxes": ["a"]}',
    b'{"mailboxes": {"bob@acme.example": "lots"}}',
    b'{"mailboxes": {"bob@acme.example": {"bytes": "x", "messages": 1}}}',
])
def test_a_malformed_usage_answer_is_unreachable(peer: tuple[ThreadingHTTPServer, TransferClient],
                                                 body: bytes) -> None:
    server, client = peer
    _Peer.body = body
    with pytest.raises(Unreachable, match="node b"):
        client.usage("acme")


def test_a_well_formed_usage_answer_is_read(peer: tuple[ThreadingHTTPServer, TransferClient]) -> None:
    server, client = peer
    _Peer.body = json.dumps({"node": "b", "mailboxes": {"bob@acme.example": {"bytes": 10, "messages": 2}}}).encode()
    assert client.usage("acme") == {"bob@acme.example": {"bytes": 10, "messages": 2}}
