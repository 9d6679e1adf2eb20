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

from dovetail.imap.session import ProxyRequest

CONNECT_TIMEOUT = 10.0
LOGIN_TIMEOUT = 30.0
PIPE_READ = 256 * 1024
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


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await reader.read(PIPE_READ)
            if not data:
                break
            writer.write(data)
            if writer.transport.get_write_buffer_size() > PIPE_READ:
                await writer.drain()
    finally:
        with contextlib.suppress(Exception):
            if writer.can_write_eof():
                writer.write_eof()


async def splice(client: tuple[asyncio.StreamReader, asyncio.StreamWriter], backend: Backend,
                 stopping: asyncio.Event) -> None:
    """Move bytes both ways until either side closes (or the server stops); closes the backend side."""
    creader, cwriter = client
    up = asyncio.ensure_future(_pipe(creader, backend.writer))
    down = asyncio.ensure_future(_pipe(backend.reader, cwriter))
    stop = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait({up, down, stop}, return_when=asyncio.FIRST_COMPLETED)
        if stop.done():
            pass
        elif down.done():
            pass  # the home node said BYE (LOGOUT, autologout): the client's connection ends too
        else:
            # The client went away: let the home node see EOF and finish, briefly.
            await asyncio.wait({down}, timeout=5.0)
    finally:
        for task in (up, down, stop):
            task.cancel()
        for task in (up, down, stop):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        backend.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(backend.writer.wait_closed(), 2.0)
