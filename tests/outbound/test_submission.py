"""Submission: AUTH over TLS with mailbox or SMTP credentials, tenant walls, limits (real smtplib)."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
import threading
from collections.abc import Iterator

import pytest

from dovetail.outbound.credentials import SmtpCredentials
from dovetail.outbound.limits import SendLimiter
from dovetail.outbound.submission import SubmissionBackend
from dovetail.queue import Queue, QueuedMessage
from dovetail.smtp.server import SmtpServer

from .sink import Certs


class Running:
    def __init__(self, backend: SubmissionBackend, ctx: ssl.SSLContext, implicit: bool) -> None:
        self.loop = asyncio.new_event_loop()
        self.server = SmtpServer(backend, hostname="submit.dovetail.test", ssl_context=ctx, implicit_tls=implicit,
                                 listener="submission", auth=True)
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self.server.start(host="127.0.0.1", port=0))
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        ready.wait(10)
        self.port = self.server.port

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(1), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def submission(world, tmp_path) -> Iterator[tuple[Running, Queue, Certs]]:  # noqa: ANN001
    certs = Certs()
    queue = Queue(tmp_path / "queue")
    srv = Running(SubmissionBackend(world.engine, queue), certs.server_context(), implicit=False)
    yield srv, queue, certs
    srv.stop()


def client(srv: Running, certs: Certs) -> smtplib.SMTP:
    c = smtplib.SMTP("127.0.0.1", srv.port, timeout=10)
    c.ehlo("client.test")
    c.starttls(context=certs.client_context())
    c.ehlo("client.test")
    return c


def msg(from_: str) -> bytes:
    return f"From: {from_}\r\nTo: bob@example.org\r\nSubject: t\r\n\r\nhello\r\n".encode()


def queued(queue: Queue) -> list[QueuedMessage]:
    return [QueuedMessage(q, queue.path("incoming", q)) for q in queue.ids("incoming")]


def test_no_auth_before_tls_and_no_unauthenticated_relay(submission) -> None:  # noqa: ANN001
    srv, queue, certs = submission
    with smtplib.SMTP("127.0.0.1", srv.port, timeout=10) as c:
        c.ehlo("client.test")
        assert not c.has_extn("auth")
        code, _ = c.mail("alice@acme.example")
        assert code == 530
    with client(srv, certs) as c:
        assert "PLAIN" in c.esmtp_features["auth"].upper()
        with pytest.raises(smtplib.SMTPSenderRefused) as exc:
            c.sendmail("alice@acme.example", ["bob@example.org"], msg("alice@acme.example"))
        assert exc.value.smtp_code == 530
    assert queued(queue) == []


def test_mailbox_login_sends_as_own_domains_only(submission) -> None:  # noqa: ANN001
    srv, queue, certs = submission
    with client(srv, certs) as c:
        with pytest.raises(smtplib.SMTPAuthenticationError):
            c.login("alice@acme.example", "wrong")
    with client(srv, certs) as c:
        c.login("alice@acme.example", "alice-pw")
        c.sendmail("alice@acme.example", ["bob@example.org"], msg("Alice <alice@acme.example>"))
        # the tenant's other domain is fine too
        c.sendmail("news@news.acme.example", ["bob@example.org"], msg("news@news.acme.example"))
        with pytest.raises(smtplib.SMTPSenderRefused) as exc:
            c.sendmail("gina@globex.example", ["bob@example.org"], msg("gina@globex.example"))
        assert exc.value.smtp_code == 553
        with pytest.raises(smtplib.SMTPDataError) as exc2:
            c.sendmail("alice@acme.example", ["bob@example.org"], msg("CEO <ceo@globex.example>"))
        assert exc2.value.smtp_code == 553 and b"From: domain" in exc2.value.smtp_error
        with pytest.raises(smtplib.SMTPDataError) as exc3:
            c.sendmail("alice@acme.example", ["bob@example.org"],
                       b"From: alice@acme.example\r\nFrom: x@globex.example\r\n\r\nhi\r\n")
        assert exc3.value.smtp_code == 550
    got = queued(queue)
    assert len(got) == 2
    assert {m.envelope.extra["tenant"] for m in got} == {"acme"}
    assert {m.envelope.auth_user for m in got} == {"alice@acme.example"}


def test_tenant_smtp_credentials(world, submission) -> None:  # noqa: ANN001
    srv, queue, certs = submission
    cred = SmtpCredentials(world.engine).add("globex", "app server")
    assert cred.username.startswith("globex-")
    with client(srv, certs) as c:
        c.login(cred.username, cred.secret)
        c.sendmail("app@globex.example", ["bob@example.org"], msg("app@globex.example"))
        with pytest.raises(smtplib.SMTPSenderRefused):
            c.sendmail("alice@acme.example", ["bob@example.org"], msg("alice@acme.example"))
    SmtpCredentials(world.engine).remove(cred.username)
    with client(srv, certs) as c, pytest.raises(smtplib.SMTPAuthenticationError):
        c.login(cred.username, cred.secret)
    assert [m.envelope.extra["tenant"] for m in queued(queue)] == ["globex"]


def test_rate_limit_and_quota(world, submission) -> None:  # noqa: ANN001
    srv, queue, certs = submission
    limiter = SendLimiter(world.engine)
    limiter.set_limits("acme", per_minute=1)
    limiter.set_limits("globex", per_day=2)
    srv.server.backend.limiter = SendLimiter(world.engine)
    with client(srv, certs) as c:
        c.login("alice@acme.example", "alice-pw")
        c.sendmail("alice@acme.example", ["bob@example.org"], msg("alice@acme.example"))
        with pytest.raises(smtplib.SMTPSenderRefused) as exc:
            c.sendmail("alice@acme.example", ["bob@example.org"], msg("alice@acme.example"))
        assert exc.value.smtp_code == 451 and b"4.7.1" in exc.value.smtp_error
    with client(srv, certs) as c:
        c.login("gina@globex.example", "gina-pw")
        with pytest.raises(smtplib.SMTPDataError) as exc2:
            c.sendmail("gina@globex.example", ["a@example.org", "b@example.org", "c@example.org"],
                       msg("gina@globex.example"))
        assert exc2.value.smtp_code == 452
        c.sendmail("gina@globex.example", ["a@example.org", "b@example.org"], msg("gina@globex.example"))
    assert len(queued(queue)) == 2


def test_implicit_tls_listener(world, tmp_path) -> None:  # noqa: ANN001
    certs = Certs()
    queue = Queue(tmp_path / "q465")
    srv = Running(SubmissionBackend(world.engine, queue), certs.server_context(), implicit=True)
    try:
        with smtplib.SMTP_SSL("127.0.0.1", srv.port, timeout=10, context=certs.client_context()) as c:
            c.login("alice@acme.example", "alice-pw")
            c.sendmail("alice@acme.example", ["bob@example.org"], msg("alice@acme.example"))
    finally:
        srv.stop()
    assert len(queued(queue)) == 1


def test_failed_logins_slow_down_then_lock_out(submission) -> None:  # noqa: ANN001
    """As IMAP does: each failure of a user or an IP is answered later, and past the limit even the right
    password is refused until the failures age out."""
    srv, queue, certs = submission
    penalty = srv.server.backend.penalty  # keep the test short: small delays, a low lockout
    penalty.base_delay, penalty.max_delay, penalty.lockout = 0.01, 0.05, 3
    for _ in range(3):
        with client(srv, certs) as c:
            with pytest.raises(smtplib.SMTPAuthenticationError):
                c.login("alice@acme.example", "wrong")
    assert penalty.failures("alice@acme.example", "127.0.0.1") == 3
    assert penalty.blocked("someone-else@acme.example", "127.0.0.1")  # the IP is counted too
    with client(srv, certs) as c:
        with pytest.raises(smtplib.SMTPAuthenticationError):
            c.login("alice@acme.example", "alice-pw")  # locked out for now
    assert queued(queue) == []


def test_auth_plain_and_login_with_and_without_initial_response(submission) -> None:  # noqa: ANN001
    srv, queue, certs = submission
    for mech in ("PLAIN", "LOGIN"):
        for initial in (True, False):
            with client(srv, certs) as c:
                c.user, c.password = "alice@acme.example", "alice-pw"
                code, text = c.auth(mech, getattr(c, f"auth_{mech.lower()}"), initial_response_ok=initial)
                assert (code, text) == (235, b"2.7.0 Authentication successful")
                c.sendmail("alice@acme.example", ["bob@example.org"], msg("alice@acme.example"))
    assert len(queued(queue)) == 4


def test_auth_plain_with_another_users_authzid_is_refused_and_counted(submission) -> None:  # noqa: ANN001
    """The rule IMAP follows too: an authorization identity other than the user is refused before the password
    is checked (Dovecot without master users), with 535 5.7.8, and counts as a failed login."""
    srv, queue, certs = submission
    penalty = srv.server.backend.penalty
    penalty.base_delay = 0.01
    with client(srv, certs) as c:
        with pytest.raises(smtplib.SMTPAuthenticationError) as exc:
            c.auth("PLAIN", lambda challenge=None: "gina@globex.example\0alice@acme.example\0alice-pw")
        assert exc.value.smtp_code == 535 and exc.value.smtp_error.startswith(b"5.7.8 ")
        assert penalty.failures("alice@acme.example", "127.0.0.1") == 1
        with pytest.raises(smtplib.SMTPSenderRefused):  # not logged in as anyone
            c.sendmail("alice@acme.example", ["bob@example.org"], msg("alice@acme.example"))
    with client(srv, certs) as c:  # naming oneself is allowed
        code, _ = c.auth("PLAIN", lambda challenge=None: "alice@acme.example\0alice@acme.example\0alice-pw")
        assert code == 235
    assert penalty.failures("alice@acme.example", "127.0.0.1") == 0


def test_from_header_hidden_past_the_scan_window_is_refused(submission) -> None:  # noqa: ANN001
    """A second From: of another tenant pushed past the header scan by padding headers must not pass."""
    from dovetail.outbound.submission import MAX_HEADER_SCAN

    srv, queue, certs = submission
    padding = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 900) for i in range(MAX_HEADER_SCAN // 900 + 10))
    raw = b"From: alice@acme.example\r\n" + padding + b"From: ceo@globex.example\r\nSubject: t\r\n\r\nhi\r\n"
    with client(srv, certs) as c:
        c.login("alice@acme.example", "alice-pw")
        with pytest.raises(smtplib.SMTPDataError) as exc:
            c.sendmail("alice@acme.example", ["bob@example.org"], raw)
        assert exc.value.smtp_code in (550, 552)
    assert queued(queue) == []


@pytest.mark.parametrize("header", [
    b"Sender: ceo@globex.example\r\n",
    b"Sender: alice@acme.example\r\nSender: ceo@globex.example\r\n",
    b"Resent-From: ceo@globex.example\r\n",
    b"From : ceo@globex.example\r\n",
    b"from:\tceo@globex.example\r\n",
])
def test_sender_and_lookalike_from_headers_of_another_tenant_are_refused(submission, header: bytes) -> None:  # noqa: ANN001
    srv, queue, certs = submission
    raw = b"From: alice@acme.example\r\n" + header + b"Subject: t\r\n\r\nhi\r\n"
    with client(srv, certs) as c:
        c.login("alice@acme.example", "alice-pw")
        with pytest.raises(smtplib.SMTPDataError) as exc:
            c.sendmail("alice@acme.example", ["bob@example.org"], raw)
        assert exc.value.smtp_code in (550, 553)
        # the tenant's own Sender: is fine
        c.sendmail("alice@acme.example", ["bob@example.org"],
                   b"From: news@news.acme.example\r\nSender: alice@acme.example\r\nSubject: t\r\n\r\nhi\r\n")
    assert len(queued(queue)) == 1


def test_a_session_outliving_the_tenant_cache_or_its_mailbox(submission) -> None:  # noqa: ANN001
    """The tenant of a logged-in session is looked up again when evicted, and a disabled mailbox stops."""
    srv, queue, certs = submission
    backend = srv.server.backend
    with client(srv, certs) as c:
        c.login("alice@acme.example", "alice-pw")
        backend._user_tenant.clear()  # evicted by 10,000 other logins
        c.sendmail("alice@acme.example", ["bob@example.org"], msg("alice@acme.example"))
        backend._user_tenant.clear()
        backend.directory.mailbox_set("alice@acme.example", enabled=False)
        with pytest.raises(smtplib.SMTPSenderRefused) as exc:
            c.sendmail("alice@acme.example", ["bob@example.org"], msg("alice@acme.example"))
        assert exc.value.smtp_code == 530
    assert len(queued(queue)) == 1
