"""A 50 MB message is streamed to the sink in bounded writes, byte-exact after dot-unstuffing."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable

from dovetail.smtp.limits import Limits

from .conftest import FileBackend, RawClient, ServerThread


def test_fifty_megabytes_streamed(start_server: Callable[..., ServerThread], backend: FileBackend) -> None:
    srv = start_server(Limits(max_message_size=60 * 1024 * 1024))
    line = b"0123456789" * 7 + b"abcd\r\n"  # 76 octets
    dotted = b"." + line  # every 64th line starts with a dot and goes out stuffed
    block = line * 63 + dotted
    count = (50 * 1024 * 1024) // len(block)
    original = block * count
    wire = (line * 63 + b"." + dotted) * count
    c = RawClient(srv.port, timeout=60)
    c.reply()
    c.send(b"EHLO x\r\nMAIL FROM:<a@x.test> SIZE=%d\r\nRCPT TO:<b@y.test>\r\nDATA\r\n" % len(original))
    assert [code for code, _ in c.replies(4)] == [250, 250, 250, 354]
    sender = threading.Thread(target=c.send, args=(wire + b".\r\nQUIT\r\n",))
    sender.start()
    code, lines = c.reply()
    sender.join(60)
    assert code == 250 and lines[0].startswith("2.0.0 Ok: queued as")
    assert c.reply()[0] == 221
    (stored,) = backend.committed
    assert len(original) >= 50_000_000
    body = stored.body()
    assert len(body) == len(original)
    assert hashlib.sha256(body).digest() == hashlib.sha256(original).digest()
    assert len(stored.writes) > 700  # many writes ...
    assert max(stored.writes) <= 64 * 1024  # ... each bounded: the message was never held whole
    c.close()
