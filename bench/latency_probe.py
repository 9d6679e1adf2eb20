"""An SMTP latency probe that runs beside a load generator: the time from the end of DATA to the reply.

``smtp-source`` reports no latency, so during a measured run one more client sends messages of the same
shape (size, recipients) one at a time, a connection each as ``smtp-source`` does, at a steady pace, and
times the interval between sending the final ``.`` line and receiving the server's reply to it: the
interval in which a server writes and syncs the message before it may say ``250``. Sequential and
paced, the probe adds a small, fixed load (``pace`` messages per second at most) and samples the
latency a client of the loaded server sees. Plain sockets: the timed interval holds one ``sendall``
and one ``recv`` and nothing else.
"""

from __future__ import annotations

import socket
import threading
import time


class ProbeError(Exception):
    """The server answered a probe message with something other than the expected reply."""


class LatencyProbe:
    """Send paced messages on a thread until :meth:`stop`; keep each message's DATA-end latency."""

    def __init__(self, port: int, sender: str, recipients: list[str], size: int, pace: float = 50.0) -> None:
        self.port = port
        self.sender = sender
        self.recipients = recipients
        self.body = _body(size)
        self.interval = 1.0 / pace
        self.latencies: list[float] = []
        self.accepted = 0
        self.error: str = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="latency-probe", daemon=True)

    def start(self) -> LatencyProbe:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ask for no further message and wait for the one in flight: ``accepted`` is final after this."""
        self._stop.set()
        self._thread.join()

    def percentile(self, q: float) -> float:
        """The ``q`` quantile (0–1) of the latencies in seconds, nearest rank; 0.0 when none."""
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]

    def _run(self) -> None:
        next_at = time.perf_counter()
        while not self._stop.is_set():
            try:
                self.latencies.append(self._send_one())
                self.accepted += 1
            except (OSError, ProbeError) as exc:
                self.error = str(exc)
                return
            next_at += self.interval
            self._stop.wait(max(0.0, next_at - time.perf_counter()))

    def _send_one(self) -> float:
        with socket.create_connection(("127.0.0.1", self.port), timeout=60) as sock:
            reader = sock.makefile("rb")
            _expect(reader, b"220")
            sock.sendall(b"EHLO probe.test\r\n")
            _expect(reader, b"250")
            sock.sendall(f"MAIL FROM:<{self.sender}>\r\n".encode())
            _expect(reader, b"250")
            for rcpt in self.recipients:
                sock.sendall(f"RCPT TO:<{rcpt}>\r\n".encode())
                _expect(reader, b"250")
            sock.sendall(b"DATA\r\n")
            _expect(reader, b"354")
            sock.sendall(self.body)
            start = time.perf_counter()
            sock.sendall(b".\r\n")
            _expect(reader, b"250")
            latency = time.perf_counter() - start
            sock.sendall(b"QUIT\r\n")
            return latency


def _expect(reader: object, code: bytes) -> None:
    """Read one (possibly multi-line) reply and check its code."""
    while True:
        line = reader.readline()  # type: ignore[attr-defined]
        if not line:
            raise ProbeError(f"connection closed while waiting for {code.decode()}")
        if not line.startswith(code):
            raise ProbeError(f"expected {code.decode()}, got {line[:200]!r}")
        if line[3:4] != b"-":
            return


def _body(size: int) -> bytes:
    """A message of about ``size`` bytes of 78-character lines, as smtp-source's payload."""
    head = b"From: <probe@sender.test>\r\nSubject: latency probe\r\n\r\n"
    line = b"x" * 78 + b"\r\n"
    count = max(1, (size - len(head)) // len(line))
    return head + line * count
