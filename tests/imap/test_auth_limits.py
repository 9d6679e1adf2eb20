"""Login, capabilities, auth penalty and connection limits over real sockets."""

from __future__ import annotations

import base64
import imaplib
import os
import time

import imapclient
import pytest
from imapclient import IMAPClient

from dovetail.imap.limits import Limits
from dovetail.mailauth.failures import shared_penalty
from tests.imap.imap_testkit import RawClient

NO_STORAGE = {"storage_factory": lambda account: object()}


def test_greeting_and_capability(make_server):
    srv = make_server(**NO_STORAGE)
    c = RawClient(srv.port)
    assert c.greeting.startswith(b"* OK [CAPABILITY IMAP4rev1")
    lines = c.cmd(b"a CAPABILITY")
    caps = lines[0].split()
    assert b"AUTH=PLAIN" in caps and b"LITERAL+" in caps and b"LOGINDISABLED" not in caps
    assert lines[-1].startswith(b"a OK")
    c.close()


def test_imaplib_login_logout(make_server, caplog):
    srv = make_server(**NO_STORAGE)
    m = imaplib.IMAP4("127.0.0.1", srv.port)
    typ, data = m.login("alice", "wonderland")
    assert typ == "OK"
    caps = m.capability()[1][0].split()
    assert b"UIDPLUS" in caps and b"MOVE" in caps and b"APPENDLIMIT=52428800" in caps
    typ, _ = m.logout()
    assert typ == "BYE"


def test_wrong_password_is_authenticationfailed(make_server):
    srv = make_server(**NO_STORAGE)
    m = imaplib.IMAP4("127.0.0.1", srv.port)
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        m.login("alice", "nope")
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        m.login("nobody", "x")
    m.shutdown()


def test_authenticate_plain_sasl_ir_and_continuation(make_server):
    srv = make_server(**NO_STORAGE)
    c = RawClient(srv.port)
    token = base64.b64encode(b"\x00bob\x00builder")
    assert c.cmd(b"a AUTHENTICATE PLAIN " + token)[-1].startswith(b"a OK [CAPABILITY")
    c.close()
    c = RawClient(srv.port)
    c.send(b"b AUTHENTICATE PLAIN\r\n")
    assert c.readline() == b"+ "
    c.send(token + b"\r\n")
    assert c.read_until_tagged(b"b")[-1].startswith(b"b OK")
    c.close()
    c = RawClient(srv.port)
    c.send(b"c AUTHENTICATE LOGIN\r\n")
    assert base64.b64decode(c.readline()[2:]) == b"Username:"
    c.send(base64.b64encode(b"alice") + b"\r\n")
    assert base64.b64decode(c.readline()[2:]) == b"Password:"
    c.send(base64.b64encode(b"wonderland") + b"\r\n")
    assert c.read_until_tagged(b"c")[-1].startswith(b"c OK")
    c.close()
    c = RawClient(srv.port)
    c.send(b"d AUTHENTICATE PLAIN\r\n")
    c.readline()
    c.send(b"*\r\n")
    assert c.read_until_tagged(b"d")[-1].startswith(b"d BAD")
    assert c.cmd(b"e AUTHENTICATE PLAIN !!!notbase64")[-1].startswith(b"e BAD")
    c.close()


def test_imaplib_authenticate(make_server):
    srv = make_server(**NO_STORAGE)
    m = imaplib.IMAP4("127.0.0.1", srv.port)
    typ, _ = m.authenticate("PLAIN", lambda _: b"\x00alice\x00wonderland")
    assert typ == "OK"
    m.logout()


def test_authenticate_plain_with_another_users_authzid_is_refused_and_counted(make_server):
    """One rule with submission: PLAIN naming someone else as authorization identity is refused before the
    password is checked (as Dovecot without master users), and counts as a failed login."""
    srv = make_server(**NO_STORAGE)
    c = IMAPClient("127.0.0.1", port=srv.port, ssl=False, timeout=10)
    with pytest.raises(imapclient.exceptions.LoginError, match=r"\[AUTHORIZATIONFAILED\]"):
        c.plain_login("alice", "wonderland", authorization_identity="bob")
    assert srv.server.penalty.failures("alice", "127.0.0.1") == 1
    c.plain_login("alice", "wonderland", authorization_identity="alice")  # its own identity is fine
    assert srv.server.penalty.failures("alice", "127.0.0.1") == 0
    c.logout()


def test_imaplib_authenticate_login_mechanism(make_server):
    srv = make_server(**NO_STORAGE)
    asked: list[bytes] = []

    def login_mech(challenge: bytes) -> bytes:
        asked.append(challenge)
        return {b"Username:": b"bob", b"Password:": b"builder"}[challenge]

    m = imaplib.IMAP4("127.0.0.1", srv.port, timeout=10)
    typ, _ = m.authenticate("LOGIN", login_mech)
    assert typ == "OK" and asked == [b"Username:", b"Password:"]
    m.logout()


def test_authenticate_sasl_errors(make_server):
    srv = make_server(**NO_STORAGE)
    c = RawClient(srv.port)
    assert c.cmd(b"a AUTHENTICATE PLAIN " + base64.b64encode(b"alice\x00wonderland"))[-1] == \
        b"a BAD Invalid PLAIN response."
    assert c.cmd(b"b AUTHENTICATE PLAIN =")[-1] == b"b BAD Invalid PLAIN response."
    assert c.cmd(b"c AUTHENTICATE PLAIN %%%")[-1] == b"c BAD Invalid base64 data in initial response"
    assert c.cmd(b"d AUTHENTICATE XOAUTH2")[-1] == b"d NO Unsupported authentication mechanism."
    c.send(b"e AUTHENTICATE LOGIN\r\n")
    c.readline()
    c.send(base64.b64encode(b"al\x00ice") + b"\r\n")
    assert c.read_until_tagged(b"e")[-1] == b"e BAD NUL in user name."
    assert c.cmd(b"f NOOP")[-1].startswith(b"f OK")
    c.close()


def test_login_with_literals(make_server):
    srv = make_server(**NO_STORAGE)
    c = RawClient(srv.port)
    c.send(b"a LOGIN {5}\r\n")
    assert c.readline().startswith(b"+ ")
    c.send(b"alice {10+}\r\nwonderland\r\n")
    assert c.read_until_tagged(b"a")[-1].startswith(b"a OK")
    c.close()


def test_logindisabled_off_loopback_unless_trusted(make_server):
    # 127.0.0.1 is loopback: secure. Mark it untrusted by checking the policy function directly
    # and by a server whose only listener is reached through loopback but with no TLS offered.
    srv = make_server(**NO_STORAGE)
    assert srv.server._is_secure_net("127.0.0.1")
    assert srv.server._is_secure_net("::1")
    assert not srv.server._is_secure_net("192.0.2.7")
    srv2 = make_server(trusted_networks=["192.0.2.0/24"], **NO_STORAGE)
    assert srv2.server._is_secure_net("192.0.2.7")
    assert not srv2.server._is_secure_net("198.51.100.1")


def test_plaintext_login_refused_when_not_secure(make_server, monkeypatch):
    srv = make_server(**NO_STORAGE)
    monkeypatch.setattr(srv.server, "_is_secure_net", lambda ip: False)
    c = RawClient(srv.port)
    assert b"LOGINDISABLED" in c.greeting and b"AUTH=PLAIN" not in c.greeting
    lines = c.cmd(b"a LOGIN alice wonderland")
    assert lines[-1].startswith(b"a NO [PRIVACYREQUIRED]")
    assert c.cmd(b"b AUTHENTICATE PLAIN " + base64.b64encode(b"\x00alice\x00wonderland"))[-1].startswith(
        b"b NO [PRIVACYREQUIRED]")
    c.close()


def test_starttls(make_server, monkeypatch):
    trustme = pytest.importorskip("trustme")
    import ssl

    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    srv = make_server(ssl_context=server_ctx, **NO_STORAGE)
    monkeypatch.setattr(srv.server, "_is_secure_net", lambda ip: False)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    m = imaplib.IMAP4("127.0.0.1", srv.port)
    assert "STARTTLS" in m.capabilities and "LOGINDISABLED" in m.capabilities
    m.starttls(ssl_context=client_ctx)
    assert "STARTTLS" not in m.capabilities and "AUTH=PLAIN" in m.capabilities
    assert m.login("alice", "wonderland")[0] == "OK"
    m.logout()
    # implicit TLS
    srv2 = make_server(ssl_context=server_ctx, implicit_tls=True, **NO_STORAGE)
    m = imaplib.IMAP4_SSL("127.0.0.1", srv2.port, ssl_context=client_ctx)
    assert m.login("bob", "builder")[0] == "OK"
    m.logout()


def test_failed_logins_are_delayed_then_unavailable(make_server):
    lim = Limits(auth_fail_base_delay=0.05, auth_fail_max_delay=0.2, auth_fail_lockout=4, max_auth_attempts=100)
    srv = make_server(limits=lim, **NO_STORAGE)
    c = RawClient(srv.port)
    t0 = time.monotonic()
    for i in range(4):
        assert c.cmd(b"a%d LOGIN alice bad" % i)[-1].startswith(b"a%d NO [AUTHENTICATIONFAILED]" % i)
    # delays 0.05 + 0.1 + 0.2 + 0.2
    assert time.monotonic() - t0 >= 0.5
    # locked: even the right password is refused for now
    assert c.cmd(b"b LOGIN alice wonderland")[-1].startswith(b"b NO [UNAVAILABLE]")
    c.close()


def test_too_many_failed_logins_disconnects(make_server):
    lim = Limits(auth_fail_base_delay=0.01, max_auth_attempts=2)
    srv = make_server(limits=lim, **NO_STORAGE)
    c = RawClient(srv.port)
    c.cmd(b"a LOGIN alice x")
    lines = c.cmd(b"b LOGIN alice y")
    assert c.readline().startswith(b"* BYE") and lines[-1].startswith(b"b NO")
    assert c.closed()


def test_connections_per_ip(make_server):
    srv = make_server(limits=Limits(max_connections_per_ip=2), **NO_STORAGE)
    a, b = RawClient(srv.port), RawClient(srv.port)
    c = RawClient(srv.port)
    assert c.greeting.startswith(b"* BYE")
    a.close()
    # the slot frees once the server has noticed the close
    deadline = time.monotonic() + 5
    while True:
        d = RawClient(srv.port)
        if d.greeting.startswith(b"* OK"):
            break
        assert time.monotonic() < deadline
        d.close()
    b.close()
    d.close()


def test_connections_per_user(make_server):
    srv = make_server(limits=Limits(max_connections_per_user=1), **NO_STORAGE)
    a = RawClient(srv.port)
    assert a.cmd(b"a LOGIN alice wonderland")[-1].startswith(b"a OK")
    b = RawClient(srv.port)
    assert b.cmd(b"b LOGIN alice wonderland")[-1].startswith(b"b NO [LIMIT]")
    assert b.cmd(b"c LOGIN bob builder")[-1].startswith(b"c OK")
    a.close()
    b.close()


def test_unauth_autologout(make_server):
    srv = make_server(limits=Limits(unauth_timeout=0.3), **NO_STORAGE)
    c = RawClient(srv.port)
    assert c.readline(timeout=3).startswith(b"* BYE")
    assert c.closed()


def test_too_many_bad_commands(make_server):
    srv = make_server(limits=Limits(max_bad_commands=3), **NO_STORAGE)
    c = RawClient(srv.port)
    c.cmd(b"a FOO")
    c.cmd(b"b )")
    lines = c.cmd(b"c SELECT INBOX")
    assert lines[-1].startswith(b"c BAD")
    assert c.readline().startswith(b"* BYE")
    assert c.closed()


def test_bad_inputs_get_bad(make_server):
    srv = make_server(limits=Limits(max_line=1000), **NO_STORAGE)
    c = RawClient(srv.port)
    assert c.cmd(b"a NOOP extra")[-1].startswith(b"a BAD")
    assert c.cmd(b"b LOGIN")[-1].startswith(b"b BAD")
    assert c.cmd(b"c SELECT INBOX")[-1].startswith(b"c BAD")  # not logged in
    assert c.cmd(b"d NOOP " + b"x" * 5000)[-1].startswith(b"d BAD [TOOBIG]")
    assert c.cmd(b"e LOGIN \"\xff\xfe\" x")[-1].startswith(b"e NO [AUTHENTICATIONFAILED]")
    c.send(b"f LOGIN {100000}\r\n")
    assert c.readline().startswith(b"f BAD [TOOBIG]")
    assert c.cmd(b"g NOOP")[-1].startswith(b"g OK")
    c.close()


def test_trickled_command_does_not_keep_an_unauthenticated_client(make_server):
    srv = make_server(limits=Limits(unauth_timeout=0.6), **NO_STORAGE)
    c = RawClient(srv.port)
    t0 = time.monotonic()
    c.send(b"a LOGIN {5}\r\n")
    assert c.readline().startswith(b"+ ")
    with pytest.raises(ConnectionError):
        for _ in range(100):  # one byte every 0.1 s never completes the command
            c.send(b"x")
            time.sleep(0.1)  # the pace of the slow client, not a synchronisation
            c.sock.settimeout(0.001)
            try:
                data = c.sock.recv(1000)
            except TimeoutError:
                continue
            if not data or b"BYE" in data:
                raise ConnectionError("closed")
    assert time.monotonic() - t0 < 6


def test_login_timeout_counts_from_connect(make_server):
    srv = make_server(limits=Limits(login_timeout=0.5, unauth_timeout=10), **NO_STORAGE)
    c = RawClient(srv.port)
    t0 = time.monotonic()
    seen: list[bytes] = []
    with pytest.raises(ConnectionError):
        while time.monotonic() - t0 < 6:  # busy with commands, but never logging in
            c.send(b"n NOOP\r\n")
            while not (line := c.readline()).startswith(b"n "):
                seen.append(line)
                if line.startswith(b"* BYE"):
                    raise ConnectionError("bye")
    assert any(ln.startswith(b"* BYE") for ln in seen)
    assert time.monotonic() - t0 < 5


def test_start_on_an_already_bound_socket(tmp_path):
    import asyncio
    import socket

    from dovetail.imap.server import ImapServer
    from dovetail.mailauth.accounts import DictAuthenticator

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]

    async def main() -> bytes:
        srv = ImapServer(DictAuthenticator({"a": "b"}, tmp_path), lambda acc: object())
        assert await srv.start(sock=sock) == port
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        greeting = await reader.readline()
        writer.write(b"x LOGIN a b\r\ny LOGOUT\r\n")
        rest = await reader.read()  # until the server closes after LOGOUT
        writer.close()
        await srv.stop(1.0)
        return greeting + rest

    out = asyncio.run(main())
    assert out.startswith(b"* OK") and b"x OK" in out and b"y OK Logout completed." in out


def test_starttls_repeatedly(make_server, monkeypatch):
    """The client's TLS hello follows the OK at once; it must never be lost to the plaintext buffer."""
    trustme = pytest.importorskip("trustme")
    import ssl

    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    srv = make_server(ssl_context=server_ctx, **NO_STORAGE)
    for _ in range(25):
        m = imaplib.IMAP4("127.0.0.1", srv.port, timeout=5)
        m.starttls(ssl_context=client_ctx)
        assert m.noop()[0] == "OK"
        m.logout()


def test_two_imap_servers_sharing_a_ledger_lock_a_user_out_together(make_server, tmp_path) -> None:
    """As two imapd workers: failures against one count when the client goes to the other."""
    lim = Limits(auth_fail_base_delay=0.01, auth_fail_max_delay=0.02, auth_fail_lockout=4, max_auth_attempts=100)
    args = dict(limits=lim, **NO_STORAGE)
    one = make_server(penalty=shared_penalty(tmp_path, 0.01, 0.02, 4), **args)
    two = make_server(penalty=shared_penalty(tmp_path, 0.01, 0.02, 4), **args)
    c = RawClient(one.port)
    for i in range(4):
        assert c.cmd(b"a%d LOGIN alice bad" % i)[-1].startswith(b"a%d NO [AUTHENTICATIONFAILED]" % i)
    c.close()
    d = RawClient(two.port)
    assert d.cmd(b"b LOGIN alice wonderland")[-1].startswith(b"b NO [UNAVAILABLE]")
    d.close()


def test_two_imap_servers_sharing_slots_enforce_one_limit(make_server, tmp_path) -> None:
    """As two imapd workers: the per-user and per-IP limits hold across both, not in each."""
    from dovetail.mailauth.slots import SLOTS_FILE, SharedSlots

    path = tmp_path / SLOTS_FILE.format(service="imapd")
    lim = Limits(max_connections_per_user=1, max_connections_per_ip=3)
    one = make_server(limits=lim, slots=SharedSlots(path, pid=os.getpid()), **NO_STORAGE)
    two = make_server(limits=lim, slots=SharedSlots(path, pid=os.getppid()), **NO_STORAGE)  # another live pid
    a = RawClient(one.port)
    assert a.cmd(b"a LOGIN alice wonderland")[-1].startswith(b"a OK")
    b = RawClient(two.port)
    assert b.cmd(b"b LOGIN alice wonderland")[-1].startswith(b"b NO [LIMIT]")
    c = RawClient(two.port)  # the third connection from 127.0.0.1 across the two servers
    assert RawClient(one.port).greeting.startswith(b"* BYE")
    a.close()
    deadline = time.monotonic() + 5  # alice's slot frees once server one has noticed the close
    while not b.cmd(b"d LOGIN alice wonderland")[-1].startswith(b"d OK"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    b.close()
    c.close()


def test_logout_gives_back_the_ip_and_user_slots_before_the_close(make_server, tmp_path) -> None:
    """The connection's IP slot and its user's go back to the shared file (in one write) before the server
    closes the socket: a client that saw the close can log in again at once, at limits of one."""
    from dovetail.mailauth.slots import SharedSlots

    slots = SharedSlots(tmp_path / "connections-imapd.sqlite")
    srv = make_server(limits=Limits(max_connections_per_user=1, max_connections_per_ip=1), slots=slots,
                      **NO_STORAGE)
    for i in range(3):
        c = RawClient(srv.port)
        assert c.cmd(b"a LOGIN alice wonderland")[-1].startswith(b"a OK"), i
        held = dict(slots.db.execute("SELECT key, n FROM slot"))
        assert held == {"ip:127.0.0.1": 1, "u:alice": 1}
        assert c.cmd(b"b LOGOUT")[-1].startswith(b"b OK") and c.closed()
        assert slots.db.execute("SELECT count(*) FROM slot").fetchone()[0] == 0


def test_a_login_whose_storage_fails_gives_its_user_slot_back(make_server, tmp_path) -> None:
    broken = {"alice"}

    def storage(account):
        if account.username in broken:
            raise OSError("mail store unreachable")
        return object()

    srv = make_server(limits=Limits(max_connections_per_user=1), storage_factory=storage)
    c = RawClient(srv.port)
    assert c.cmd(b"a LOGIN alice wonderland")[-1].startswith(b"a NO [UNAVAILABLE] Mailbox storage unavailable")
    broken.clear()
    assert c.cmd(b"b LOGIN alice wonderland")[-1].startswith(b"b OK")  # the failed login's slot was given back
    d = RawClient(srv.port)
    assert d.cmd(b"c LOGIN alice wonderland")[-1].startswith(b"c NO [LIMIT]")
    c.close()
    d.close()
