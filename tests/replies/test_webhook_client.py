"""The webhook HTTP client against scripted loopback servers: keep-alive, answers it must parse, and
what it must refuse (redirects, oversized answers, slow receivers, unverifiable certificates)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trustme

from dovetail.replies import webhook_client
from dovetail.replies.webhook_client import ConnectError, ReadTimeout, RemoteProtocolError, WebhookClient

# What the scripted server answers to a request: (raw answer or None for no answer, then close?).
Script = Callable[[int, bytes], tuple[bytes | None, bool]]


class Scripted:
    """Reads HTTP/1.1 requests on 127.0.0.1 and answers each as ``script`` says."""

    def __init__(self, script: Script, tls: ssl.SSLContext | None = None) -> None:
        self.script = script
        self.tls = tls
        self.requests: list[bytes] = []
        self.connections = 0
        self.port = 0

    async def __aenter__(self) -> Scripted:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                answer, close = self.script(len(self.requests), request)
                if answer is not None:
                    writer.write(answer)
                    await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def run(script: Script, body: Callable[[Scripted, WebhookClient], Awaitable[Any]], *,
        tls: ssl.SSLContext | None = None, **options: Any) -> Any:
    async def main() -> Any:
        client = WebhookClient(guard=False, **options)
        try:
            async with Scripted(script, tls) as server:
                return await body(server, client)
        finally:
            await client.aclose()
    return asyncio.run(main())


OK = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"


def test_posts_share_a_kept_alive_connection_and_chunked_answers_are_read() -> None:
    def script(n: int, _request: bytes) -> tuple[bytes, bool]:
        if n == 1:
            return b"HTTP/1.1 100 Continue\r\n\r\n" + OK, False
        chunks = b"4\r\nbusy\r\n5;x=1\r\n, sor\r\n2\r\nry\r\n0\r\n\r\n"
        return b"HTTP/1.1 500 Oops\r\ntransfer-encoding: chunked\r\n\r\n" + chunks, False

    async def body(server: Scripted, client: WebhookClient) -> list[Any]:
        url = f"http://user%40x:p%3Ass@127.0.0.1:{server.port}/hook/ä?a=b c"
        return [await client.post(url, b'{"n": 1}', {"webhook-id": "msg_1"}),
                await client.post(url, b"{}", {}), server]

    first, second, server = run(script, body)
    assert (first.status, second.status, second.text) == (200, 500, "busy, sorry")
    assert server.connections == 1
    head = server.requests[0].decode()
    assert head.startswith("POST /hook/%C3%A4?a=b%20c HTTP/1.1\r\n")
    for line in (f"host: 127.0.0.1:{server.port}", "content-length: 8", "webhook-id: msg_1",
                 "authorization: Basic dXNlckB4OnA6c3M=", "user-agent: Dovetail-Webhooks/1"):
        assert f"\r\n{line}\r\n" in head
    assert head.endswith('\r\n\r\n{"n": 1}')


def test_a_redirect_is_an_answer_not_followed() -> None:
    async def body(server: Scripted, client: WebhookClient) -> Any:
        return await client.post(f"http://127.0.0.1:{server.port}/hook", b"{}", {}), server

    answer, server = run(lambda _n, _r: (b"HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:9/x\r\n"
                                         b"content-length: 0\r\n\r\n", False), body)
    assert answer.status == 302 and len(server.requests) == 1


def test_a_connection_closed_while_idle_is_replaced_and_the_post_sent_once_more() -> None:
    """The receiver drops the kept-alive connection on the second request without answering."""
    def script(n: int, _request: bytes) -> tuple[bytes | None, bool]:
        return (None, True) if n == 2 else (OK, False)

    async def body(server: Scripted, client: WebhookClient) -> Any:
        url = f"http://127.0.0.1:{server.port}/hook"
        return [(await client.post(url, b"{}", {})).status for _ in range(2)], server

    statuses, server = run(script, body)
    assert statuses == [200, 200] and server.connections == 2 and len(server.requests) == 3


def test_an_oversized_answer_is_cut_and_its_connection_not_reused() -> None:
    big = b"x" * (webhook_client.MAX_BODY * 4)

    async def body(server: Scripted, client: WebhookClient) -> Any:
        url = f"http://127.0.0.1:{server.port}/hook"
        return await client.post(url, b"{}", {}), await client.post(url, b"{}", {}), server

    first, _second, server = run(
        lambda _n, _r: (b"HTTP/1.1 400 No\r\ncontent-length: %d\r\n\r\n%s" % (len(big), big), False), body)
    assert first.status == 400 and len(first.body) == webhook_client.MAX_BODY
    assert server.connections == 2


def test_a_receiver_that_does_not_answer_times_out() -> None:
    async def body(server: Scripted, client: WebhookClient) -> Any:
        return await client.post(f"http://127.0.0.1:{server.port}/hook", b"{}", {})

    with pytest.raises(ReadTimeout):
        run(lambda _n, _r: (None, False), body, timeout=0.2)


def test_garbage_is_a_protocol_error() -> None:
    async def body(server: Scripted, client: WebhookClient) -> Any:
        return await client.post(f"http://127.0.0.1:{server.port}/hook", b"{}", {})

    with pytest.raises(RemoteProtocolError):
        run(lambda _n, _r: (b"SSH-2.0-OpenSSH\r\n\r\n", True), body)


@pytest.mark.parametrize("name", ["localhost", "elsewhere.example"])
def test_https_certificates_are_checked_against_the_url_name(name: str) -> None:
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(name).configure_cert(server_tls)
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)

    async def body(server: Scripted, client: WebhookClient) -> Any:
        return await client.post(f"https://localhost:{server.port}/hook", b"{}", {})

    if name == "localhost":
        assert run(lambda _n, _r: (OK, False), body, tls=server_tls, ssl_context=client_tls).status == 200
    else:
        with pytest.raises(ConnectError, match="certificate"):
            run(lambda _n, _r: (OK, False), body, tls=server_tls, ssl_context=client_tls)


def test_an_answer_without_length_ends_with_its_connection() -> None:
    async def body(server: Scripted, client: WebhookClient) -> Any:
        url = f"http://127.0.0.1:{server.port}/hook"
        return await client.post(url, b"{}", {}), await client.post(url, b"{}", {}), server

    first, _second, server = run(lambda _n, _r: (b"HTTP/1.0 503 Busy\r\n\r\ncome back later", True), body)
    assert (first.status, first.text, server.connections) == (503, "come back later", 2)
