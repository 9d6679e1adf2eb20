"""The I/O of a login proxied to the account's home node, as Dovecot's ``proxy=y`` does.

The session (sans-I/O) decides that a login goes elsewhere and signs the hand-over
(:class:`dovetail.imap.session.ProxyRequest`); this adapter opens the connection to the home node's IMAP
listener, says who the client is with ``ID`` (Dovecot's field names: ``x-originating-ip``,
``x-originating-port``, ``x-connected-ip``, ``x-connected-port``, ``x-proxy-ttl``), logs in with the
signed token in place of the password, and from the home node's OK on only moves bytes both ways,
without looking at them: IDLE, literals, COMPRESS and LOGOUT are the home node's business.

Between nodes the connection is plain TCP from this node's own address (the home node trusts a
proxied login only from a node address); the client's TLS ends here.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

from dovetail.imap.session import ProxyRequest

CONNECT_TIMEOUT = 10.0
LOGIN_TIMEOUT = 30.0
MAX_LINE = 64 * 1024


class ProxyError(Exception):
    """The home node could not be reached or refused the login; the text is for the client's NO."""


@dataclass
class Backend:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    capabilities: str


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def id_command(req: ProxyRequest) -> bytes:
    g = req.grant
    fields = (("x-originating-ip", g.client_ip), ("x-originating-port", str(g.client_port)),
              ("x-connected-ip", req.local[0]), ("x-connected-port", str(req.local[1])),
              ("x-proxy-ttl", str(g.ttl)))
    return ("P1 ID (" + " ".join(f"{_quoted(k)} {_quoted(v)}" for k, v in fields) + ")\r\n").encode()


async def _tagged(reader: asyncio.StreamReader, tag: bytes) -> bytes:
    """Read response lines until the one tagged ``tag``; returns it without its CRLF."""
    while True:
        line = await reader.readline()
        if not line:
            raise ProxyError("the home node closed the connection")
        if len(line) > MAX_LINE:
            raise ProxyError("the home node sent an overlong line")
        if line.startswith(tag + b" "):
            return line.rstrip(b"\r\n")


def _status(line: bytes) -> tuple[str, str]:
    """``P2 OK [CAPABILITY a b] text`` → ("OK", "[CAPABILITY a b] text")."""
    parts = line.decode("utf-8", "replace").split(" ", 2)
    return (parts[1].upper() if len(parts) > 1 else ""), (parts[2] if len(parts) > 2 else "")


def _capabilities(text: str) -> str:
    if text.startswith("[CAPABILITY ") and "]" in text:
        return text[len("[CAPABILITY "):text.index("]")]
    return ""


def _refusal(text: str) -> str:
    """The home node's NO text without its response code (the client gets ``[UNAVAILABLE]``)."""
    return text.split("] ", 1)[1] if text.startswith("[") and "] " in text else text


async def open_backend(req: ProxyRequest, source: str | None) -> Backend:
    """Connect to the home node and log the client in there; raises ``ProxyError`` with a client-fit text."""
    host, _, port = req.route.address.rpartition(":")
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host.strip("[]"), int(port), limit=MAX_LINE,
                                    local_addr=(source, 0) if source else None),
            CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as exc:
        raise ProxyError(f"Home node {req.route.node} unreachable ({exc.__class__.__name__})") from None
    try:
        async with asyncio.timeout(LOGIN_TIMEOUT):
            greeting = await reader.readline()
            if not greeting.startswith(b"* OK"):
                raise ProxyError(f"Home node {req.route.node} is not serving IMAP")
            user = req.grant.user
            writer.write(id_command(req) + f"P2 LOGIN {_quoted(user)} {_quoted(req.token)}\r\n".encode())
            await writer.drain()
            status, text = _status(await _tagged(reader, b"P1"))
            if status != "OK":
                raise ProxyError(f"Home node {req.route.node} refused the forwarding: {_refusal(text)}")
            status, text = _status(await _tagged(reader, b"P2"))
            if status != "OK":
                raise ProxyError(_refusal(text))
    except TimeoutError:
        writer.close()
        raise ProxyError(f"Home node {req.route.node} did not answer in time") from None
    except (ProxyError, OSError) as exc:
        writer.close()
        if isinstance(exc, ProxyError):
            raise
        raise ProxyError(f"Home node {req.route.node} dropped the connection") from None
    return Backend(reader, writer, _capabilities(text))


class _Relay(asyncio.Protocol):
    """One side of a spliced pair: every chunk a transport receives is written to the other at once, from
    the event loop's callback, without a task or a stream buffer in between; the writing side's flow
    control pauses the reading side."""

    def __init__(self, peer: asyncio.BaseTransport, done: asyncio.Future[None],
                 previous: asyncio.BaseProtocol) -> None:
        self.peer = peer
        self.done = done
        self.previous = previous  # the stream's protocol: told of the end, so the stream's close completes

    def data_received(self, data: bytes) -> None:
        self.peer.write(data)  # type: ignore[attr-defined]

    def eof_received(self) -> bool:
        return False  # the transport closes; connection_lost ends the splice

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)
        with contextlib.suppress(Exception):
            self.previous.connection_lost(exc)

    def pause_writing(self) -> None:
        self.peer.pause_reading()  # type: ignore[attr-defined]

    def resume_writing(self) -> None:
        self.peer.resume_reading()  # type: ignore[attr-defined]


def _buffered(reader: asyncio.StreamReader) -> bytes:
    """What the stream received but nobody read yet (StreamReader has no public call that does not wait)."""
    buf = reader._buffer  # type: ignore[attr-defined]  # noqa: SLF001
    data = bytes(buf)
    buf.clear()
    return data


async def splice(client: tuple[asyncio.StreamReader, asyncio.StreamWriter], backend: Backend,
                 stopping: asyncio.Event) -> None:
    """Move bytes both ways until either side closes (or the server stops); closes both sides.

    The streams are used for the login only: for the session the two transports get protocols that
    write each received chunk to the other transport directly (a task per direction reading a stream
    and writing the other cost the front node about twice the CPU in ``bench/imap_proxy.py``)."""
    creader, cwriter = client
    ctransport: Any = cwriter.transport  # a socket or TLS transport: it reads as well as writes
    btransport: Any = backend.writer.transport
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    ctransport.set_protocol(_Relay(btransport, done, ctransport.get_protocol()))
    btransport.set_protocol(_Relay(ctransport, done, btransport.get_protocol()))
    for reader, peer in ((creader, btransport), (backend.reader, ctransport)):
        pending = _buffered(reader)
        if pending:
            peer.write(pending)
    for transport in (ctransport, btransport):
        if not transport.is_reading():
            transport.resume_reading()
    stop = asyncio.ensure_future(stopping.wait())
    try:
        waiting: set[asyncio.Future[Any]] = {done, stop}
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
        btransport.close()
        ctransport.close()
