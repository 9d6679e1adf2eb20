"""SNI selection on a real TLS listener (uvloop, as the workers run): exact, wildcard, fallbacks, reload,
a broken certificate, and the TLS-ALPN-01 challenge certificate."""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path

import pytest
import uvloop
from cryptography import x509

from dovetail.certs.challenges import ACME_IDENTIFIER, ChallengeFiles
from dovetail.certs.sni import SniContexts
from dovetail.certs.store import CertStore
from dovetail.datadir import make_self_signed

from .helpers import make_pair


def handshake(port: int, name: str | None, alpn: list[str] | None = None) -> tuple[x509.Certificate, str | None]:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname=name) as tls:
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der), tls.selected_alpn_protocol()


def sans(cert: x509.Certificate) -> set[str]:
    return set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
               .get_values_for_type(x509.DNSName))


class Listener:
    """A uvloop TLS server in a thread, serving with the given default context."""

    def __init__(self, ctx: ssl.SSLContext) -> None:
        self.ctx = ctx
        self.loop = uvloop.new_event_loop()
        self.port = 0

    def __enter__(self) -> Listener:
        import threading

        ready = threading.Event()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        async def start() -> None:
            self.server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=self.ctx)
            self.port = self.server.sockets[0].getsockname()[1]
            ready.set()

        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def store(tmp_path: Path) -> CertStore:
    return CertStore(tmp_path / "tls")


@pytest.fixture
def fallback(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "tls" / "cert.pem", tmp_path / "tls" / "key.pem"
    make_self_signed(cert, key, "mx.host.example")
    return cert, key


def test_exact_then_wildcard_then_hostname_then_self_signed(store: CertStore, fallback: tuple[Path, Path]) -> None:
    store.save("mail.a.example", *make_pair(["mail.a.example", "mta-sts.a.example"]))
    store.save("*.w.example", *make_pair(["*.w.example"]))
    sni = SniContexts(store, "mx.host.example", fallback)
    with Listener(sni.default) as server:
        assert sans(handshake(server.port, "mta-sts.a.example")[0]) == {"mail.a.example", "mta-sts.a.example"}
        assert sans(handshake(server.port, "MAIL.A.EXAMPLE")[0]) == {"mail.a.example", "mta-sts.a.example"}
        assert sans(handshake(server.port, "imap.w.example")[0]) == {"*.w.example"}
        assert "mx.host.example" in sans(handshake(server.port, "deep.imap.w.example")[0])  # one level only
        assert "mx.host.example" in sans(handshake(server.port, "unknown.example")[0])  # the self-signed one
        assert "mx.host.example" in sans(handshake(server.port, None)[0])  # no SNI at all
        store.save("mx.host.example", *make_pair(["mx.host.example"], issuer="Real CA"))
        sni.refresh(force=True)
        got = handshake(server.port, "unknown.example")[0]
        assert got.issuer.rfc4514_string() == "CN=Real CA"  # the hostname's certificate is now the fallback


def test_renewed_certificate_served_without_a_new_context(store: CertStore, fallback: tuple[Path, Path]) -> None:
    store.save("mail.a.example", *make_pair(["mail.a.example"]))
    now = [0.0]
    sni = SniContexts(store, "mx.host.example", fallback, clock=lambda: now[0])
    with Listener(sni.default) as server:
        first = handshake(server.port, "mail.a.example")[0].serial_number
        store.save("mail.a.example", *make_pair(["mail.a.example"]))
        assert handshake(server.port, "mail.a.example")[0].serial_number == first  # checked at most once a second
        now[0] += 1.5
        assert handshake(server.port, "mail.a.example")[0].serial_number != first


def test_a_broken_certificate_is_left_out_and_the_rest_serves(store: CertStore, fallback: tuple[Path, Path]) -> None:
    store.save("mail.a.example", *make_pair(["mail.a.example"]))
    store.save("mail.b.example", *make_pair(["mail.b.example"]))
    store.key_path("mail.b.example").write_bytes(make_pair(["x.example"])[1])  # key of another certificate
    sni = SniContexts(store, "mx.host.example", fallback)
    with Listener(sni.default) as server:
        assert sans(handshake(server.port, "mail.a.example")[0]) == {"mail.a.example"}
        assert "mx.host.example" in sans(handshake(server.port, "mail.b.example")[0])


def test_tls_alpn_01_challenge_certificate(store: CertStore, fallback: tuple[Path, Path]) -> None:
    files = ChallengeFiles(store.acme_dir)
    path = files.alpn_put("mail.a.example", "token.thumbprint")
    sni = SniContexts(store, "mx.host.example", fallback, alpn_challenges=files.alpn_dir)
    with Listener(sni.default) as server:
        cert, alpn = handshake(server.port, "mail.a.example", ["acme-tls/1"])
        assert alpn == "acme-tls/1"
        ext = cert.extensions.get_extension_for_oid(ACME_IDENTIFIER)
        assert ext.critical
        import hashlib

        assert ext.value.value == b"\x04\x20" + hashlib.sha256(b"token.thumbprint").digest()
        files.remove(path)
        assert "mx.host.example" in sans(handshake(server.port, "mail.a.example")[0])


def test_no_certificate_at_all_means_no_tls(store: CertStore, tmp_path: Path) -> None:
    from dovetail.certs.sni import listener_context

    assert listener_context(store, "mx.host.example", (tmp_path / "none.pem", tmp_path / "none.key")) is None
    store.save("mail.a.example", *make_pair(["mail.a.example"]))
    assert listener_context(store, "mx.host.example", (tmp_path / "none.pem", tmp_path / "none.key")) is not None
