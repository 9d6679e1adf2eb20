"""An aiosmtpd server standing in for a relay or a remote MX: TLS, AUTH, scripted replies."""

from __future__ import annotations

import ssl
import threading
from dataclasses import dataclass, field

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from .dnsserver import free_port


@dataclass
class Received:
    sender: str
    recipients: list[str]
    data: bytes
    tls: bool
    auth: str | None


@dataclass
class SinkHandler:
    """Recipients starting with ``bounce`` get 550, with ``defer`` 451; DATA answers ``data_reply``."""

    data_reply: str = "250 2.0.0 Ok: queued as 4ABC123XYZ"
    messages: list[Received] = field(default_factory=list)
    peers: set[object] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: ANN001, ANN201
        session.host_name = hostname
        with self.lock:
            self.peers.add(session.peer)
        return responses

    @property
    def sessions(self) -> int:
        """Distinct client connections seen (STARTTLS starts a new aiosmtpd session, not a connection)."""
        return len(self.peers)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: ANN001, ANN201
        if address.startswith("bounce"):
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        if address.startswith("defer"):
            return f"451 4.3.0 <{address}>: Temporary lookup failure"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server, session, envelope):  # noqa: ANN001, ANN201
        with self.lock:
            tls = server.transport.get_extra_info("ssl_object") is not None
            self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.content, tls,
                                          getattr(session, "dovetail_login", None)))
        return self.data_reply


class Certs:
    def __init__(self, *names: str) -> None:
        self.ca = trustme.CA()
        self.cert = self.ca.issue_cert(*(names or ("127.0.0.1", "localhost")))

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.cert.configure_cert(ctx)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        return ctx


class Sink:
    """``with Sink(certs, require_tls=True, users={"u": "p"}) as s: s.port; s.handler.messages``."""

    def __init__(self, certs: Certs | None = None, *, require_tls: bool = False, implicit_tls: bool = False,
                 users: dict[str, str] | None = None, handler: SinkHandler | None = None) -> None:
        self.handler = handler or SinkHandler()
        self.port = free_port()
        kwargs: dict[str, object] = {}
        users = users or {}

        def authenticator(server, session, envelope, mechanism, auth_data):  # noqa: ANN001, ANN202
            ok = (isinstance(auth_data, LoginPassword)
                  and users.get(auth_data.login.decode()) == auth_data.password.decode())
            if ok:
                session.dovetail_login = auth_data.login.decode()
            return AuthResult(success=ok, handled=False)

        if certs is not None and not implicit_tls:
            kwargs["tls_context"] = certs.server_context()
            kwargs["require_starttls"] = require_tls
        if certs is not None and implicit_tls:
            kwargs["ssl_context"] = certs.server_context()
        if users:
            # aiosmtpd counts only STARTTLS as TLS for auth_require_tls; an implicit-TLS session is TLS too
            kwargs.update(authenticator=authenticator, auth_required=True, auth_require_tls=not implicit_tls)
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port, **kwargs)

    def __enter__(self) -> Sink:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()
