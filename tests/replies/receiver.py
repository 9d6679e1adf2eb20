"""A real HTTP webhook receiver for tests: ``http.server`` in a thread, verifying every request.

It speaks HTTP/1.1 with keep-alive, as production receivers do, so a sender that keeps its connections
open pays one TCP set-up per connection rather than per webhook; ``connections`` counts the accepted ones.
``stop`` closes the kept-alive connections too, so a stopped receiver answers nothing more.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from dovetail.replies.signing import WebhookVerificationError, verify


class Receiver:
    def __init__(self, secret: str | None = None, port: int = 0) -> None:
        self.secret = secret
        self.port = port
        self.status = 200
        self.received: list[dict[str, Any]] = []  # verified payloads, in arrival order
        self.arrival: list[float] = []  # time.monotonic() of each, for latency measurements
        self.rejected: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.started = 0  # requests whose body has been read, answered or not
        self.connections = 0  # TCP connections accepted
        self._open: set[Any] = set()  # their sockets, closed by stop()
        self.hold = threading.Event()  # cleared: requests wait (in flight at the sender) until it is set
        self.hold.set()
        self.cond = threading.Condition()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: every response carries a content-length

            def setup(self) -> None:
                super().setup()
                with outer.cond:
                    outer.connections += 1
                    outer._open.add(self.connection)

            def finish(self) -> None:
                with outer.cond:
                    outer._open.discard(self.connection)
                super().finish()

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {k: v for k, v in self.headers.items()}
                with outer.cond:
                    outer.started += 1
                    outer.cond.notify_all()
                outer.hold.wait()
                status = outer.status
                with outer.cond:
                    outer.headers.append(headers)
                    try:
                        payload = verify(outer.secret or "", headers, body)
                    except WebhookVerificationError as exc:
                        outer.rejected.append(str(exc))
                        status = 400
                    else:
                        if status < 300:
                            outer.received.append(payload)
                            outer.arrival.append(time.monotonic())
                    outer.cond.notify_all()
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 128  # the default 5 drops connections a concurrent dispatcher opens
            daemon_threads = True

        self._server = Server(("127.0.0.1", self.port), Handler)
        self._server.allow_reuse_address = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            with self.cond:
                kept_alive, self._open = list(self._open), set()
            for sock in kept_alive:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            self._server = None

    def wait_for(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Every payload received once ``count`` distinct events have arrived (at-least-once may repeat one)."""
        with self.cond:
            self.cond.wait_for(lambda: len({p["id"] for p in self.received}) >= count, timeout=timeout)
            return list(self.received)

    def wait_started(self, count: int, timeout: float = 10.0) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.started >= count, timeout=timeout)
