"""STARTTLS (RFC 3207) and implicit TLS with trustme certificates."""

from __future__ import annotations

import smtplib
import socket
import ssl
from collections.abc import Callable

import pytest
import trustme

from .conftest import FileBackend, ServerThread
from .test_server import wait_until


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def contexts(ca: trustme.CA) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("mx.test").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    return server_ctx, client_ctx


def test_starttls_then_auth_and_send(
    start_server: Callable[..., ServerThread], backend: FileBackend, contexts: tuple
) -> None:
    server_ctx, client_ctx = contexts
    srv = start_server(ssl_context=server_ctx, auth=True)
    with smtplib.SMTP("127.0.0.1", srv.port, local_hostname="client.test") as s:
        s.ehlo()
        assert s.has_extn("starttls") and not s.has_extn("auth")
        s._host = "mx.test"  # certificate name to check
        assert s.starttls(context=client_ctx)[0] == 220
        s.ehlo()
        assert not s.has_extn("starttls") and s.esmtp_features["auth"] == " PLAIN LOGIN"
        s.login("alice", "s3cret")
        s.sendmail("a@x.test", ["b@y.test"], b"Subject: tls\r\n\r\nsecret\r\n")
    (stored,) = backend.committed
    assert stored.session.tls and stored.session.tls_version and stored.session.auth_user == "alice"
    data = stored.read()
    assert b"with ESMTPSA id " in data
    assert f"(using {stored.session.tls_version} with cipher ".encode() in data


def test_pipelined_plaintext_after_starttls_is_discarded(
    start_server: Callable[..., ServerThread], contexts: tuple
) -> None:
    server_ctx, client_ctx = contexts
    srv = start_server(ssl_context=server_ctx)
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    f = sock.makefile("rb")
    assert f.readline().startswith(b"220 ")
    sock.sendall(b"EHLO x\r\n")
    while not f.readline().startswith(b"250 "):
        pass
    sock.sendall(b"STARTTLS\r\nMAIL FROM:<injected@x.test>\r\nNOOP\r\n")
    assert f.readline() == b"220 2.0.0 Ready to start TLS\r\n"
    tls = client_ctx.wrap_socket(sock, server_hostname="mx.test")
    tf = tls.makefile("rb")
    tls.sendall(b"MAIL FROM:<a@x.test>\r\n")
    assert tf.readline() == b"503 5.5.1 Error: send HELO/EHLO first\r\n"  # no answer to the injected lines
    tls.sendall(b"EHLO x\r\n")
    lines = [tf.readline()]
    while not lines[-1].startswith(b"250 "):
        lines.append(tf.readline())
    assert lines[0] == b"250-mx.test\r\n" and b"250-STARTTLS\r\n" not in lines
    tls.sendall(b"QUIT\r\n")
    assert tf.readline() == b"221 2.0.0 Bye\r\n"
    tls.close()


def test_implicit_tls(start_server: Callable[..., ServerThread], backend: FileBackend, contexts: tuple) -> None:
    server_ctx, client_ctx = contexts
    srv = start_server(ssl_context=server_ctx, implicit_tls=True)
    with smtplib.SMTP_SSL("127.0.0.1", srv.port, context=_named(client_ctx)) as s:
        s.ehlo()
        assert not s.has_extn("starttls")
        s.sendmail("a@x.test", ["b@y.test"], b"Subject: x\r\n\r\nx\r\n")
    (stored,) = backend.committed
    assert stored.session.tls and b"with ESMTPS id " in stored.read()


def test_failed_handshake_drops_connection(start_server: Callable[..., ServerThread], contexts: tuple) -> None:
    server_ctx, _ = contexts
    srv = start_server(ssl_context=server_ctx)
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    f = sock.makefile("rb")
    f.readline()
    sock.sendall(b"EHLO x\r\nSTARTTLS\r\n")
    while not f.readline().startswith(b"220 "):
        pass
    sock.sendall(b"this is not a TLS client hello\r\n" * 4)
    rest = f.read()  # returns only at EOF: the server hung up (maybe after a TLS alert record)
    assert not rest.startswith(b"2") and not rest.startswith(b"5")
    sock.close()
    wait_until(lambda: srv.server.active_connections == 0)


def _named(ctx: ssl.SSLContext) -> ssl.SSLContext:
    ctx.check_hostname = False  # connecting by IP; the chain is still verified against the test CA
    return ctx
