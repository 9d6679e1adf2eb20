"""The same engine under uvloop: pipelining, STARTTLS, BDAT and timeouts."""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Callable

import pytest
import trustme

from dovetail.smtp.limits import Limits

from .conftest import FileBackend, RawClient, ServerThread

pytest.importorskip("uvloop")


def test_uvloop_starttls_pipelining_bdat(start_server: Callable[..., ServerThread], backend: FileBackend) -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("mx.test").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    srv = start_server(Limits(idle_timeout=0.5), uvloop=True, ssl_context=server_ctx)
    with smtplib.SMTP("127.0.0.1", srv.port) as s:
        s.ehlo()
        s._host = "mx.test"
        s.starttls(context=client_ctx)
        s.ehlo()
        s.sendmail("a@x.test", ["b@y.test"], b"Subject: uv\r\n\r\n.x\r\n")
    c = RawClient(srv.port)
    c.reply()
    c.send(b"EHLO x\r\nMAIL FROM:<>\r\nRCPT TO:<c@y.test>\r\nBDAT 3 LAST\r\nabc")
    replies = c.replies(4)
    assert replies[3][1].startswith("2.0.0 Ok: queued as")
    assert c.reply() == (421, ["4.4.2 mx.test Error: timeout exceeded"])
    first, second = backend.committed
    assert first.session.tls and first.body() == b"Subject: uv\r\n\r\n.x\r\n"
    assert second.body() == b"abc"
    c.close()
