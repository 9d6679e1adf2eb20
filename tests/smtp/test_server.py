"""The asyncio server over real sockets: smtplib sessions, rejections, limits, timeouts, shutdown."""

from __future__ import annotations

import asyncio
import logging
import smtplib
import socket
import threading
import time
from collections.abc import Callable
from email.message import EmailMessage

import pytest

from dovetail.smtp.limits import Limits

from .conftest import FileBackend, RawClient, ServerThread


def wait_until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll a condition owned by the server thread until it holds (a sync point, not a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.01)


def message(body: str = "Hello.\n") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "a@x.test"
    msg["To"] = "b@y.test"
    msg["Subject"] = "test"
    msg.set_content(body)
    return msg


def test_smtplib_session_stores_message_with_received_header(server: ServerThread, backend: FileBackend) -> None:
    with smtplib.SMTP("127.0.0.1", server.port, local_hostname="client.test") as s:
        code, _ = s.ehlo()
        assert code == 250 and s.has_extn("pipelining") and s.has_extn("chunking") and s.has_extn("dsn")
        s.send_message(message(), from_addr="a@x.test", to_addrs=["b@y.test"])
        reply = s.noop()
    assert reply[0] == 250
    (stored,) = backend.committed
    assert stored.envelope.sender == "a@x.test"
    assert [r.address for r in stored.envelope.recipients] == ["b@y.test"]
    assert stored.envelope.size_hint is not None  # smtplib sends SIZE=
    data = stored.read()
    first = data.split(b"\r\n\t")[0]
    assert first == b"Received: from client.test (unknown [127.0.0.1])"
    assert f"by mx.test (Dovetail) with ESMTP id {stored.queue_id}".encode() in data
    assert b"for <b@y.test>; " in data
    assert stored.body().endswith(b"\r\n\r\nHello.\r\n")
    assert b"Subject: test\r\n" in stored.body()
    assert server.server.messages_accepted == 1


def test_rejected_recipients_and_sender(server: ServerThread, backend: FileBackend) -> None:
    with smtplib.SMTP("127.0.0.1", server.port) as s:
        s.ehlo()
        refused = s.sendmail(
            "a@x.test",
            ["unknown1@y.test", "ok@y.test", "x@elsewhere.example", "full@y.test"],
            b"Subject: x\r\n\r\nbody\r\n",
        )
        assert refused == {
            "unknown1@y.test": (550, b"5.1.1 <unknown1@y.test>: Recipient address rejected: User unknown"),
            "x@elsewhere.example": (554, b"5.7.1 <x@elsewhere.example>: Relay access denied"),
            "full@y.test": (452, b"4.2.2 <full@y.test>: Mailbox full"),
        }
        with pytest.raises(smtplib.SMTPSenderRefused) as info:
            s.sendmail("spammer@bad.example", ["ok@y.test"], b"x")
        assert info.value.smtp_code == 554
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            s.sendmail("a@x.test", ["unknown2@y.test"], b"x")
    (stored,) = backend.committed
    assert [r.address for r in stored.envelope.recipients] == ["ok@y.test"]


def test_log_lines_postfix_style(server: ServerThread, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        with smtplib.SMTP("127.0.0.1", server.port, local_hostname="client.test") as s:
            s.ehlo()
            s.sendmail("a@x.test", ["unknown@y.test", "ok@y.test"], b"Subject: x\r\n\r\nbody\r\n")
        wait_until(lambda: server.server.active_connections == 0)
        # The connection's lines are written as it ends, which may come after the count drops.
        wait_until(lambda: "disconnect from unknown[127.0.0.1]" in caplog.text)
    text = caplog.text
    assert "connect from unknown[127.0.0.1]" in text
    assert (
        "NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 550 5.1.1 <unknown@y.test>: Recipient address rejected: "
        "User unknown; from=<a@x.test> to=<unknown@y.test> proto=ESMTP helo=<client.test>"
    ) in text
    assert "client=unknown[127.0.0.1]" in text
    assert "disconnect from unknown[127.0.0.1] ehlo=1 mail=1 rcpt=1/2 data=1 quit=1 commands=5/6" in text


def test_size_limit_with_size_param(start_server: Callable[..., ServerThread], backend: FileBackend) -> None:
    srv = start_server(Limits(max_message_size=1000))
    with smtplib.SMTP("127.0.0.1", srv.port) as s:
        s.ehlo()
        assert s.esmtp_features["size"] == "1000"
        with pytest.raises(smtplib.SMTPSenderRefused) as info:
            s.sendmail("a@x.test", ["b@y.test"], b"x" * 2000)
        assert (info.value.smtp_code, info.value.smtp_error) == (552, b"5.3.4 Message size exceeds fixed limit")
    assert backend.messages == []


def test_size_limit_without_size_param_aborts_sink(
    start_server: Callable[..., ServerThread], backend: FileBackend
) -> None:
    srv = start_server(Limits(max_message_size=100_000, chunk_size=4096))
    c = RawClient(srv.port)
    c.reply()
    c.send(b"EHLO x\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n")
    assert [code for code, _ in c.replies(4)] == [250, 250, 250, 354]
    c.send((b"z" * 998 + b"\r\n") * 300 + b".\r\nNOOP\r\n")
    assert c.replies(2) == [(552, "5.3.4 Message size exceeds fixed limit"), (250, "2.0.0 Ok")]
    (stored,) = backend.messages
    assert stored.state == "aborted"
    assert sum(stored.writes) <= 100_000 + 500  # the tail past the limit never reached the sink
    assert not list(backend.root.iterdir())
    c.close()


def test_line_and_command_length_limits(start_server: Callable[..., ServerThread], backend: FileBackend) -> None:
    srv = start_server(Limits(max_line_length=1000, max_command_line=512))
    c = RawClient(srv.port)
    c.reply()
    c.send(b"EHLO x\r\nNOOP " + b"n" * 600 + b"\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n")
    assert c.replies(5)[1:] == [(500, "5.5.2 Error: command line too long"), (250, "2.1.0 Ok"),
                                (250, "2.1.5 Ok"), (354, "End data with <CR><LF>.<CR><LF>")]  # fmt: skip
    c.send(b"short\r\n" + b"L" * 1500 + b"\r\n.\r\n")
    assert c.reply() == (552, ["5.6.0 Error: message line longer than 1000 octets"])
    assert backend.messages[0].state == "aborted" and backend.committed == []
    c.close()


def test_recipient_limit(start_server: Callable[..., ServerThread], backend: FileBackend) -> None:
    srv = start_server(Limits(max_recipients=3))
    with smtplib.SMTP("127.0.0.1", srv.port) as s:
        s.ehlo()
        s.mail("a@x.test")
        codes = [s.rcpt(f"r{i}@y.test") for i in range(4)]
        assert [c for c, _ in codes] == [250, 250, 250, 452]
        assert codes[-1][1] == b"4.5.3 Error: too many recipients"
        assert s.data(b"Subject: x\r\n\r\nx\r\n")[0] == 250
    assert len(backend.committed[0].envelope.recipients) == 3


def test_hard_error_limit_then_disconnect(start_server: Callable[..., ServerThread]) -> None:
    srv = start_server(Limits(max_errors=5))
    c = RawClient(srv.port)
    c.reply()
    c.send(b"EHLO x\r\n" + b"BOGUS\r\n" * 8)
    replies = c.replies(7)
    assert replies[1:6] == [(500, "5.5.1 Error: command not recognized")] * 5
    assert replies[6] == (421, "4.7.0 mx.test Error: too many errors")
    assert c.closed_by_peer()
    wait_until(lambda: srv.server.active_connections == 0)


def test_connection_limit_total(start_server: Callable[..., ServerThread]) -> None:
    srv = start_server(Limits(max_connections=2, max_connections_per_ip=10))
    held = [RawClient(srv.port) for _ in range(2)]
    for c in held:
        assert c.reply()[0] == 220
    extra = RawClient(srv.port)
    assert extra.reply() == (421, ["4.7.0 mx.test Error: too many connections"])
    assert extra.closed_by_peer()
    held[0].send(b"QUIT\r\n")
    assert held[0].reply()[0] == 221
    wait_until(lambda: srv.server.active_connections == 1)
    again = RawClient(srv.port)
    assert again.reply()[0] == 220
    assert srv.server.connections_refused == 1
    for c in (*held, extra, again):
        c.close()


def test_connection_limit_per_ip(start_server: Callable[..., ServerThread]) -> None:
    srv = start_server(Limits(max_connections=10, max_connections_per_ip=2))
    held = [RawClient(srv.port) for _ in range(2)]
    for c in held:
        assert c.reply()[0] == 220
    extra = RawClient(srv.port)
    assert extra.reply() == (421, ["4.7.0 mx.test Error: too many connections from 127.0.0.1"])
    other = socket.create_connection(("127.0.0.1", srv.port), source_address=("127.0.0.2", 0), timeout=5)
    assert other.recv(100).startswith(b"220 ")  # another client address still gets in
    other.close()
    for c in (*held, extra):
        c.close()


def test_idle_timeout_cuts_off_silent_client(start_server: Callable[..., ServerThread]) -> None:
    srv = start_server(Limits(idle_timeout=0.5))
    c = RawClient(srv.port)
    start = time.monotonic()
    c.reply()
    c.send(b"EHLO x\r\nNOOP")  # an unfinished command line does not keep the session alive
    c.reply()
    assert c.reply() == (421, ["4.4.2 mx.test Error: timeout exceeded"])
    assert 0.4 < time.monotonic() - start < 5
    assert c.closed_by_peer()
    wait_until(lambda: srv.server.active_connections == 0)


def test_data_timeout_cuts_off_and_aborts(start_server: Callable[..., ServerThread], backend: FileBackend) -> None:
    srv = start_server(Limits(idle_timeout=30, data_timeout=0.5))
    c = RawClient(srv.port)
    c.reply()
    c.send(b"EHLO x\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n")
    c.replies(4)
    c.send(b"Subject: partial\r\n\r\nsome text\r\n")
    assert c.reply() == (421, ["4.4.2 mx.test Error: timeout exceeded"])
    assert c.closed_by_peer()
    wait_until(lambda: srv.server.active_connections == 0)
    assert backend.messages[0].state == "aborted"
    assert not list(backend.root.iterdir())


def test_max_data_time_bounds_a_slow_drip(start_server: Callable[..., ServerThread], backend: FileBackend) -> None:
    srv = start_server(Limits(data_timeout=5, max_data_time=0.6))
    c = RawClient(srv.port)
    c.reply()
    c.send(b"EHLO x\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n")
    c.replies(4)
    start = time.monotonic()
    c.sock.settimeout(0.1)
    got = b""
    while time.monotonic() - start < 5 and not got:
        c.send(b"x")
        try:
            got = c.sock.recv(200)
        except TimeoutError:
            pass
    assert got.startswith(b"421 4.4.2")
    assert time.monotonic() - start < 3
    c.close()


def test_auth_plain_and_login(start_server: Callable[..., ServerThread]) -> None:
    srv = start_server(auth=True, auth_plaintext=True, listener="submission")
    for mech in ("PLAIN", "LOGIN"):
        with smtplib.SMTP("127.0.0.1", srv.port) as s:
            s.ehlo()
            assert s.esmtp_features["auth"] == " PLAIN LOGIN"
            with pytest.raises(smtplib.SMTPAuthenticationError) as info:
                s.login("alice", "wrong", initial_response_ok=mech == "PLAIN")
            assert info.value.smtp_code == 535
            s.user, s.password = "alice", "s3cret"
            code, text = s.auth(mech, getattr(s, f"auth_{mech.lower()}"))
            assert (code, text) == (235, b"2.7.0 Authentication successful")
            assert s.sendmail("a@x.test", ["b@y.test"], b"x\r\n") == {}


def test_auth_with_another_users_authzid_reaches_the_backend_as_a_refused_login(
    start_server: Callable[..., ServerThread], backend: FileBackend
) -> None:
    srv = start_server(auth=True, auth_plaintext=True, listener="submission")
    with smtplib.SMTP("127.0.0.1", srv.port) as s:
        s.ehlo()
        with pytest.raises(smtplib.SMTPAuthenticationError) as info:
            s.auth("PLAIN", lambda challenge=None: "bob\0alice\0s3cret")
        assert info.value.smtp_code == 535
    assert backend.refused_logins == [("PLAIN", "alice")]


def test_plaintext_auth_is_decided_per_client_address(start_server: Callable[..., ServerThread]) -> None:
    """Without TLS, AUTH is offered only to clients the policy trusts (loopback in production)."""
    asked: list[str] = []

    def trusted(ip: str) -> bool:
        asked.append(ip)
        return ip == "127.0.0.2"

    srv = start_server(auth=True, auth_plaintext=trusted, listener="submission")
    with smtplib.SMTP("127.0.0.1", srv.port) as s:
        s.ehlo()
        assert not s.has_extn("auth")
    with smtplib.SMTP("127.0.0.1", srv.port, source_address=("127.0.0.2", 0)) as s:
        s.ehlo()
        assert s.esmtp_features["auth"] == " PLAIN LOGIN"
    assert asked == ["127.0.0.1", "127.0.0.2"]


def test_stop_lets_transaction_finish_and_closes_idle(
    start_server: Callable[..., ServerThread], backend: FileBackend
) -> None:
    srv = start_server()
    srv.call(_make_gate(backend))
    busy = RawClient(srv.port)
    busy.reply()
    idle = RawClient(srv.port)
    idle.reply()
    busy.send(b"EHLO x\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n")
    busy.replies(4)
    busy.send(b"Subject: x\r\n\r\nbody\r\n.\r\n")
    srv.call(asyncio.wait_for(backend.commit_entered.wait(), 10))
    stopping = asyncio.run_coroutine_threadsafe(srv.server.stop(grace=10), srv.loop)
    assert idle.reply() == (421, ["4.3.2 mx.test Service shutting down"])
    with pytest.raises(OSError):
        RawClient(srv.port, timeout=2)
    srv.loop.call_soon_threadsafe(backend.commit_gate.set)
    code, lines = busy.reply()
    assert code == 250 and lines[0].startswith("2.0.0 Ok: queued as Q")
    assert busy.reply() == (421, ["4.3.2 mx.test Service shutting down"])
    stopping.result(10)
    assert backend.committed and srv.server.active_connections == 0


def test_stop_after_grace_aborts_unfinished(start_server: Callable[..., ServerThread], backend: FileBackend) -> None:
    srv = start_server()
    c = RawClient(srv.port)
    c.reply()
    c.send(b"EHLO x\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\npartial\r\n")
    c.replies(4)
    wait_until(lambda: bool(backend.messages))
    srv.call(srv.server.stop(grace=0.3))
    assert c.reply() == (421, ["4.3.2 mx.test Service shutting down"])
    assert backend.messages[0].state == "aborted"


async def _make_gate(backend: FileBackend) -> None:
    backend.commit_gate = asyncio.Event()


def test_shared_prebound_socket_served_by_two_workers(
    start_server: Callable[..., ServerThread], backend: FileBackend
) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    workers = [start_server(sock=listener.dup()) for _ in range(2)]
    listener.close()
    for i in range(12):
        with smtplib.SMTP("127.0.0.1", port) as s:
            s.sendmail("a@x.test", [f"r{i}@y.test"], b"x\r\n")
    assert len(backend.committed) == 12
    assert sum(w.server.messages_accepted for w in workers) == 12
    workers[0].stop()
    with smtplib.SMTP("127.0.0.1", port) as s:  # the other worker still serves the shared socket
        assert s.noop()[0] == 250


def test_reading_pauses_while_backend_is_slow(start_server: Callable[..., ServerThread], backend: FileBackend) -> None:
    limits = Limits(read_buffer_high=256 * 1024)
    srv = start_server(limits)
    c = RawClient(srv.port, timeout=30)
    c.reply()
    c.send(b"EHLO x\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n")
    c.replies(4)
    srv.call(_make_write_gate(backend))  # after the Received: header went out with the 354
    body = (b"y" * 78 + b"\r\n") * 100_000  # 8 MB
    sender = threading.Thread(target=c.send, args=(body + b".\r\n",))
    sender.start()
    wait_until(lambda: srv.run(lambda: srv.server.reading_paused) == 1)
    # the engine waits on the gated first write and reads no further than one socket read past the mark
    assert srv.run(srv.server.buffered) <= limits.read_buffer_high + 512 * 1024
    assert len(backend.messages[0].writes) == 2  # the header, then the first chunk, which is stuck
    srv.loop.call_soon_threadsafe(backend.write_gate.set)
    sender.join(30)
    code, _ = c.reply()
    assert code == 250
    assert backend.committed[0].body() == body
    c.close()


async def _make_write_gate(backend: FileBackend) -> None:
    backend.write_gate = asyncio.Event()
