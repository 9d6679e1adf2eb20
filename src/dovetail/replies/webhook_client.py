"""The webhook dispatcher's HTTP client: a keep-alive HTTP/1.1 POST over asyncio streams, and nothing else.

Hand-written for speed. The dispatcher posts every event (hundreds a second when a campaign draws a
burst of replies) and nothing more than a POST with a small body is needed; through httpx each POST
cost the replies process about 1.5 ms of CPU (some 60 % of its samples under load: the client's
layers, a readability probe of the pooled socket per request, headers and body written in two
system calls). Here a request is one ``write`` and a response is parsed from one read in the usual
case. What httpx gave and webhooks rely on is kept:

- **The SSRF guard** (:mod:`.netguard`): when ``guard`` is on, a new connection goes to an address
  resolved and checked just before, never to the name (DNS rebinding gains nothing); the ``Host``
  header and the TLS server name and certificate check use the URL's name. A kept-alive connection
  is reused only for the same scheme, host and port, so it is always to an address that was checked.
- **No redirects**: a ``3xx`` is an answer like any other (the dispatcher records it as a failure).
- **Timeouts**: ``timeout`` seconds to connect (TLS handshake included), then ``timeout`` seconds for
  the request and the whole response, so a receiver that answers a byte at a time cannot hold a post.
- **TLS verification** for ``https``, against the same trust store httpx used (``SSL_CERT_FILE``,
  ``SSL_CERT_DIR``, else certifi's bundle).
- **Bounded responses**: headers up to 64 KiB, at most ``MAX_BODY`` bytes of a body kept; a longer
  body ends the connection rather than being read.
- Credentials in the URL (``https://user:pass@host/``) are sent as HTTP Basic authentication.

Concurrency per endpoint is the dispatcher's (a semaphore per endpoint); the pool keeps at most
``max_idle`` idle connections per origin and drops those idle for ``KEEPALIVE_EXPIRY`` seconds. A
kept-alive connection the receiver closed meanwhile is noticed before use, or fails before any byte
of an answer: the POST is then sent once more on a fresh connection (at-least-once, same
``webhook-id``). No proxy is used: webhooks go straight to the receiver.
"""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
import time
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

from . import netguard

MAX_HEADER = 64 * 1024
MAX_BODY = 64 * 1024
KEEPALIVE_EXPIRY = 5.0
_PATH_SAFE = "/!$&'()*+,;=:@%~-._"
_QUERY_SAFE = _PATH_SAFE + "?"


class PostError(Exception):
    """A POST that got no HTTP answer; the class name says what went wrong (as httpx's did)."""


class ConnectError(PostError):
    pass


class ConnectTimeout(PostError):
    pass


class ReadTimeout(PostError):
    pass


class RemoteProtocolError(PostError):
    pass


class ReadError(PostError):
    pass


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes  # at most MAX_BODY bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str  # as in the URL, lower-cased, IDNA-encoded, without brackets
    port: int
    head: bytes  # request line and fixed headers, without content-length and the caller's headers


class _Connection:
    __slots__ = ("reader", "writer", "idle_since")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0

    def usable(self, now: float) -> bool:
        """Open, not closed by the receiver, and nothing unasked-for waiting in it (a ``408`` before the
        receiver hangs up, say: StreamReader has no public look at what it buffered)."""
        return (not self.writer.is_closing() and not self.reader.at_eof()
                and not self.reader._buffer  # type: ignore[attr-defined]
                and now - self.idle_since < KEEPALIVE_EXPIRY)

    def close(self) -> None:
        self.writer.close()


def default_ssl_context() -> ssl.SSLContext:
    """Certificates checked against the trust store httpx used, so receivers that worked still work."""
    if os.environ.get("SSL_CERT_FILE"):
        ctx = ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    elif os.environ.get("SSL_CERT_DIR"):
        ctx = ssl.create_default_context(capath=os.environ["SSL_CERT_DIR"])
    else:
        import certifi

        ctx = ssl.create_default_context(cafile=certifi.where())
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class WebhookClient:
    """POSTs over kept-alive connections, one pool per (scheme, host, port)."""

    def __init__(self, *, timeout: float = 10.0, guard: bool = True, user_agent: str = "Dovetail-Webhooks/1",
                 ssl_context: ssl.SSLContext | None = None, max_idle: int = 16) -> None:
        self.timeout = timeout
        self.guard = guard  # resolve and check every new connection's address (see .netguard)
        self.user_agent = user_agent
        self.max_idle = max_idle
        self._ssl = ssl_context
        self._targets: dict[str, _Target] = {}
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._swept = time.monotonic()

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> Response:
        target = self._targets.get(url)
        if target is None:
            if len(self._targets) >= 4096:
                self._targets.clear()
            target = self._targets[url] = self._target(url)
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        request = b"%scontent-length: %d\r\n%s\r\n%s" % (target.head, len(body), extra.encode("latin-1"), body)
        key = (target.scheme, target.host, target.port)
        conn = self._pooled(key)
        if conn is not None:
            try:
                return await self._exchange(key, conn, request)
            except _StaleConnection:
                pass  # closed by the receiver while idle: once more on a new connection
        conn = await self._connect(target)
        try:
            return await self._exchange(key, conn, request)
        except _StaleConnection as exc:
            raise ReadError(str(exc)) from None

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()

    # --- connections ---------------------------------------------------------------------------

    def _pooled(self, key: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.usable(now):
                return conn
            conn.close()
        return None

    def _put_back(self, key: tuple[str, str, int], conn: _Connection) -> None:
        now = time.monotonic()
        if now - self._swept > KEEPALIVE_EXPIRY:
            self._sweep(now)
        idle = self._idle.setdefault(key, [])
        if len(idle) >= self.max_idle:
            conn.close()
            return
        conn.idle_since = now
        idle.append(conn)

    def _sweep(self, now: float) -> None:
        """Close what expired or was closed by receivers no longer posted to (each holds a descriptor)."""
        self._swept = now
        for key, idle in list(self._idle.items()):
            keep = []
            for conn in idle:
                if conn.usable(now):
                    keep.append(conn)
                else:
                    conn.close()
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]

    async def _connect(self, target: _Target) -> _Connection:
        address = target.host
        if self.guard:
            try:
                address = await netguard.resolve_public(target.host, target.port)
            except (netguard.BlockedTarget, netguard.Unresolvable) as exc:
                raise ConnectError(str(exc)) from None
        tls = None
        if target.scheme == "https":
            if self._ssl is None:
                self._ssl = default_ssl_context()
            tls = self._ssl
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await asyncio.open_connection(
                    address, target.port, ssl=tls, server_hostname=target.host if tls else None, limit=MAX_HEADER)
        except TimeoutError:
            raise ConnectTimeout(f"no connection to {target.host}:{target.port} within {self.timeout:g}s") from None
        except (OSError, ssl.SSLError) as exc:
            raise ConnectError(str(exc) or type(exc).__name__) from None
        return _Connection(reader, writer)

    # --- one exchange --------------------------------------------------------------------------

    async def _exchange(self, key: tuple[str, str, int], conn: _Connection, request: bytes) -> Response:
        reusable = False
        try:
            try:
                async with asyncio.timeout(self.timeout):
                    conn.writer.write(request)
                    status, reusable, body = await self._response(conn.reader)
            except TimeoutError:
                raise ReadTimeout(f"no complete answer within {self.timeout:g}s") from None
            except (ConnectionError, ssl.SSLError) as exc:
                if conn.idle_since and isinstance(exc, ConnectionError):
                    raise _StaleConnection(str(exc)) from None
                raise ReadError(str(exc) or type(exc).__name__) from None
            except asyncio.LimitOverrunError:
                raise RemoteProtocolError("response headers longer than 64 KiB") from None
            except asyncio.IncompleteReadError as exc:
                if not exc.partial and conn.idle_since:
                    raise _StaleConnection("the connection was closed before an answer") from None
                raise RemoteProtocolError("the connection was closed in the middle of the answer") from None
            return Response(status, body)
        finally:
            if reusable:
                self._put_back(key, conn)
            else:
                conn.close()

    async def _response(self, reader: asyncio.StreamReader) -> tuple[int, bool, bytes]:
        """(status, whether the connection may carry another request, the body's first MAX_BODY bytes)."""
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            status, version, fields = _parse_head(head)
            if status >= 200:
                break
            if status == 101:
                raise RemoteProtocolError("the receiver switched protocols")  # interim 1xx are skipped
        connection = fields.get("connection", "").lower()
        keep = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
        if status in (204, 304):
            return status, keep, b""
        if "chunked" in fields.get("transfer-encoding", "").lower():
            body, complete = await _read_chunked(reader)
            return status, keep and complete, body
        length = fields.get("content-length")
        if length is not None:
            try:
                size = int(length)
            except ValueError:
                raise RemoteProtocolError(f"bad content-length {length!r}") from None
            if size < 0:
                raise RemoteProtocolError(f"bad content-length {length!r}")
            body = await reader.readexactly(min(size, MAX_BODY))
            return status, keep and size <= MAX_BODY, body
        body = b""  # delimited by the end of the connection
        while len(body) < MAX_BODY and (more := await reader.read(MAX_BODY - len(body))):
            body += more
        return status, False, body

    def _target(self, url: str) -> _Target:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise ConnectError(f"not an http(s) URL: {url!r}")
        host = parts.hostname
        if not host.isascii():
            import idna

            host = idna.encode(host, uts46=True).decode("ascii")
        try:
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError:
            raise ConnectError(f"bad port in {url!r}") from None
        name = f"[{host}]" if ":" in host else host
        if parts.port and parts.port != (443 if scheme == "https" else 80):
            name += f":{parts.port}"
        target = quote(parts.path or "/", safe=_PATH_SAFE)
        if parts.query:
            target += "?" + quote(parts.query, safe=_QUERY_SAFE)
        head = f"POST {target} HTTP/1.1\r\nhost: {name}\r\naccept: */*\r\nuser-agent: {self.user_agent}\r\n"
        if parts.username is not None or parts.password is not None:
            pair = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}".encode()
            head += f"authorization: Basic {base64.b64encode(pair).decode()}\r\n"
        return _Target(scheme, host, port, head.encode("ascii"))


class _StaleConnection(Exception):
    """A kept-alive connection that turned out closed before any byte of an answer."""


def _parse_head(head: bytes) -> tuple[int, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    try:
        version, code = lines[0].split(" ", 2)[:2]
        status = int(code)
    except ValueError:
        raise RemoteProtocolError(f"not an HTTP status line: {lines[0][:100]!r}") from None
    if not version.startswith("HTTP/1.") or not 100 <= status <= 999:
        raise RemoteProtocolError(f"not an HTTP/1 status line: {lines[0][:100]!r}")
    fields: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            name = name.strip().lower()
            fields[name] = f"{fields[name]}, {value.strip()}" if name in fields else value.strip()
    return status, version, fields


async def _read_chunked(reader: asyncio.StreamReader) -> tuple[bytes, bool]:
    """A chunked body's first MAX_BODY bytes; False when it was longer (the rest is left unread)."""
    body = bytearray()
    while True:
        line = await reader.readuntil(b"\r\n")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise RemoteProtocolError(f"bad chunk size {line[:40]!r}") from None
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass  # trailer fields
            return bytes(body), True
        if len(body) + size > MAX_BODY:
            body += await reader.readexactly(MAX_BODY - len(body))
            return bytes(body), False
        body += await reader.readexactly(size)
        await reader.readexactly(2)
