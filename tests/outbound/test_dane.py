"""Outbound DANE (RFC 7672) against a real SMTP server on loopback, with TLSA records and the AD bit
served by the loopback DNS server standing in for a validating resolver."""

from __future__ import annotations

import hashlib
import logging
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from dovetail.outbound.dane import Tlsa, tlsa_record_for, validating_resolver, verify
from dovetail.outbound.delivery import AgentConfig, OutboundAgent
from dovetail.outbound.keys import DkimKeys
from dovetail.outbound.mx import MxResolver
from dovetail.outbound.transports import Transports

from .conftest import make_world
from .dnsserver import LoopbackDNS
from .sink import Certs, Sink
from .test_delivery import deliver, queued

MX1, MX2 = "mx1.example.org", "mx2.example.org"


class ChainCerts(Certs):
    """A server certificate sent with its CA, as RFC 7672 §3.1.2 asks of a DANE-TA server."""

    def __init__(self, *names: str) -> None:
        super().__init__(*names)
        self._dir = tempfile.TemporaryDirectory()
        self.chain_file = Path(self._dir.name) / "chain.pem"
        self.chain_file.write_bytes(b"".join(p.bytes() for p in self.cert.cert_chain_pems) + self.ca.cert_pem.bytes())
        self.key_file = Path(self._dir.name) / "key.pem"
        self.key_file.write_bytes(self.cert.private_key_pem.bytes())

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.chain_file, self.key_file)
        return ctx

    @property
    def leaf(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert.cert_chain_pems[0].bytes())

    @property
    def ca_cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.ca.cert_pem.bytes())


def spki_sha256(cert: x509.Certificate) -> bytes:
    return hashlib.sha256(cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)).digest()


def full_sha256(cert: x509.Certificate) -> bytes:
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).digest()


@pytest.fixture(scope="module")
def world(tmp_path_factory):  # noqa: ANN001, ANN201
    """One directory for the module: the agent only reads its (empty) transports and keys."""
    root = tmp_path_factory.mktemp("dane")
    return make_world(root / "data", f"sqlite:///{root / 'dovetail.db'}")


@pytest.fixture(scope="module")
def dns_module() -> Iterator[LoopbackDNS]:
    with LoopbackDNS() as server:
        yield server


@pytest.fixture
def dns_server(dns_module: LoopbackDNS) -> LoopbackDNS:
    """The module's DNS server with an empty zone."""
    zone = dns_module.zone
    with zone.lock:
        zone.records.clear()
        zone.secure.clear()
        zone.failing.clear()
    return dns_module


@pytest.fixture(scope="module")
def certs() -> ChainCerts:
    return ChainCerts(MX1, MX2)


@pytest.fixture(scope="module")
def sink(certs: ChainCerts):  # noqa: ANN201
    with Sink(certs) as server:
        yield server


@pytest.fixture
def received(sink):  # noqa: ANN001, ANN201
    sink.handler.messages.clear()
    return sink.handler.messages


def publish(dns_server, port: int, *hosts: str, secure: bool = True) -> None:  # noqa: ANN001
    """example.org's MX hosts (preference 10, 20...) on 127.0.0.1, signed (AD) when ``secure``."""
    for n, host in enumerate(hosts):
        dns_server.mx("example.org", host, 10 * (n + 1))
        dns_server.a(host, "127.0.0.1")
        if secure:
            dns_server.secure(host, f"_{port}._tcp.{host}")
    if secure:
        dns_server.secure("example.org")


def dane_agent(world, dns_server, port: int, fetch_policy=None) -> OutboundAgent:  # noqa: ANN001
    config = AgentConfig(hostname="out.dovetail.test", mx_port=port, connect_timeout=5, command_timeout=5, dane=True)
    mx = MxResolver(validating_resolver([dns_server.nameserver], 2.0), fetch_policy=fetch_policy)
    return OutboundAgent(Transports(world.engine), DkimKeys(world.engine, world.dkim_dir), config, mx=mx)


def test_matching_dane_ee_is_delivered_and_logged_verified(world, certs, sink, received, dns_server, tmp_path,
                                                           caplog) -> None:
    publish(dns_server, sink.port, MX1)
    dns_server.tlsa(f"_{sink.port}._tcp.{MX1}", 3, 1, 1, spki_sha256(certs.leaf))
    agent = dane_agent(world, dns_server, sink.port)
    msg = queued(tmp_path, ["bob@example.org"])
    with caplog.at_level(logging.INFO):
        [res] = deliver(agent, msg)
    assert res.status == "sent"
    assert [m.tls for m in received] == [True]
    [line] = [r.getMessage() for r in caplog.records if "dane=" in r.getMessage()]
    assert f"{msg.queue_id}: Verified TLS connection established to {MX1}[127.0.0.1]:{sink.port}" in line
    assert "dane=verified (DANE-EE 3 1 1" in line
    assert agent.shaper.dane_counts == {"verified": 1, "failed": 0, "none": 0}


def test_mismatch_tries_the_next_mx_then_defers_never_in_clear(world, certs, sink, received, dns_server,
                                                                tmp_path) -> None:
    publish(dns_server, sink.port, MX1, MX2)
    dns_server.tlsa(f"_{sink.port}._tcp.{MX1}", 3, 1, 1, b"\x01" * 32)
    dns_server.tlsa(f"_{sink.port}._tcp.{MX2}", 3, 0, 1, full_sha256(certs.leaf))
    [res] = deliver(dane_agent(world, dns_server, sink.port), queued(tmp_path, ["bob@example.org"]))
    assert res.status == "sent" and res.relay.startswith(f"{MX2}[127.0.0.1]")  # mx1's certificate did not match

    dns_server.clear(f"_{sink.port}._tcp.{MX2}")
    dns_server.tlsa(f"_{sink.port}._tcp.{MX2}", 3, 1, 2, b"\x02" * 64)
    agent = dane_agent(world, dns_server, sink.port)
    [res] = deliver(agent, queued(tmp_path, ["carol@example.org"]))
    assert res.status == "deferred" and res.dsn_code == "4.7.5"
    assert res.reason.startswith(f"DANE: certificate of {MX2}[127.0.0.1]:{sink.port} does not match TLSA records")
    assert [m.recipients for m in received] == [["bob@example.org"]]
    assert agent.shaper.dane_counts["failed"] == 2


def test_tlsa_of_an_insecure_zone_is_ignored(world, sink, received, dns_server, tmp_path, caplog) -> None:
    publish(dns_server, sink.port, MX1)
    dns_server.tlsa(f"_{sink.port}._tcp.{MX1}", 3, 1, 1, b"\x01" * 32)  # would not match
    dns_server.zone.secure.discard(f"_{sink.port}._tcp.{MX1}")  # the TLSA answer comes without AD
    with caplog.at_level(logging.INFO):
        [res] = deliver(dane_agent(world, dns_server, sink.port), queued(tmp_path, ["bob@example.org"]))
    assert res.status == "sent" and "dane=none" in caplog.text
    dns_server.zone.secure.clear()  # and an insecure MX RRset: its hosts' TLSA is not even asked for
    asked = dns_server.zone.count(f"_{sink.port}._tcp.{MX1}", "TLSA")
    [res] = deliver(dane_agent(world, dns_server, sink.port), queued(tmp_path, ["carol@example.org"]))
    assert res.status == "sent" and dns_server.zone.count(f"_{sink.port}._tcp.{MX1}", "TLSA") == asked
    assert len(received) == 2


def test_dane_ta_with_the_ca_presented_and_the_name_checked(world, certs, sink, received, dns_server,
                                                            tmp_path) -> None:
    publish(dns_server, sink.port, MX1)
    dns_server.tlsa(f"_{sink.port}._tcp.{MX1}", 2, 0, 1, full_sha256(certs.ca_cert))
    [res] = deliver(dane_agent(world, dns_server, sink.port), queued(tmp_path, ["bob@example.org"]))
    assert res.status == "sent" and len(received) == 1

    other = ChainCerts("mail.elsewhere.example")  # same kind of chain, a name that is neither MX1 nor example.org
    with Sink(other) as wrong_name:
        dns_server.clear(f"_{wrong_name.port}._tcp.{MX1}")
        dns_server.secure(f"_{wrong_name.port}._tcp.{MX1}")
        dns_server.tlsa(f"_{wrong_name.port}._tcp.{MX1}", 2, 0, 1, full_sha256(other.ca_cert))
        [res] = deliver(dane_agent(world, dns_server, wrong_name.port), queued(tmp_path, ["carol@example.org"]))
        assert res.status == "deferred" and "names none of mx1.example.org, example.org" in res.reason
        assert wrong_name.handler.messages == []


def test_tlsa_servfail_of_a_secure_host_defers(world, sink, received, dns_server, tmp_path) -> None:
    publish(dns_server, sink.port, MX1)
    dns_server.fail(f"_{sink.port}._tcp.{MX1}")
    [res] = deliver(dane_agent(world, dns_server, sink.port), queued(tmp_path, ["bob@example.org"]))
    assert res.status == "deferred" and res.dsn_code == "4.7.5"
    assert res.reason == f"DANE: TLSA lookup error for _{sink.port}._tcp.{MX1}: SERVFAIL"
    assert received == []


def test_no_starttls_with_tlsa_defers(world, certs, dns_server, tmp_path) -> None:
    with Sink(None) as plain:
        publish(dns_server, plain.port, MX1)
        dns_server.tlsa(f"_{plain.port}._tcp.{MX1}", 3, 1, 1, spki_sha256(certs.leaf))
        [res] = deliver(dane_agent(world, dns_server, plain.port), queued(tmp_path, ["bob@example.org"]))
        assert res.status == "deferred" and res.dsn_code == "4.7.5"
        assert "DANE: TLS is required by the TLSA records of mx1.example.org, but was not offered" in res.reason
        assert plain.handler.messages == []


def test_dane_takes_precedence_over_mta_sts(world, certs, sink, received, dns_server, tmp_path) -> None:
    publish(dns_server, sink.port, MX1)
    dns_server.tlsa(f"_{sink.port}._tcp.{MX1}", 3, 1, 1, spki_sha256(certs.leaf))
    dns_server.txt("_mta-sts.example.org", "v=STSv1; id=1")

    async def policy(domain: str) -> str:  # lists no MX of ours: under MTA-STS alone, nothing would be sent
        return "version: STSv1\nmode: enforce\nmx: mail.other.example\nmax_age: 86400\n"

    [res] = deliver(dane_agent(world, dns_server, sink.port, policy), queued(tmp_path, ["bob@example.org"]))
    assert res.status == "sent" and len(received) == 1


def test_record_matching_rules(certs) -> None:
    leaf_der, ca_der = certs.leaf.public_bytes(Encoding.DER), certs.ca_cert.public_bytes(Encoding.DER)
    spki = certs.leaf.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    for record in (Tlsa(3, 1, 0, spki), Tlsa(3, 0, 2, hashlib.sha512(leaf_der).digest()),
                   Tlsa(2, 1, 1, spki_sha256(certs.ca_cert))):
        assert verify([leaf_der, ca_der], (record,), [MX1]).ok, record
    pkix = Tlsa(1, 1, 1, spki_sha256(certs.leaf))  # PKIX-EE: unusable for SMTP (RFC 7672 §3.1.3)
    assert not pkix.usable and not verify([leaf_der], (pkix,), [MX1]).ok
    ta_not_sent = Tlsa(2, 0, 1, full_sha256(certs.ca_cert))  # a digest of a CA the server did not send
    assert verify([leaf_der], (ta_not_sent,), [MX1]).reason == "no TLSA record matches the server's certificate"
    assert tlsa_record_for(certs.cert.cert_chain_pems[0].bytes(), 25, MX1) == \
        f"_25._tcp.{MX1}. IN TLSA 3 1 1 {spki_sha256(certs.leaf).hex()}"


def test_dane_ee_ignores_expiry_dane_ta_does_not(tmp_path) -> None:
    import datetime

    ca = trustme.CA()
    old = ca.issue_cert(MX1, not_after=datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC))
    leaf = x509.load_pem_x509_certificate(old.cert_chain_pems[0].bytes())
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    chain = [leaf.public_bytes(Encoding.DER), ca_cert.public_bytes(Encoding.DER)]
    assert verify(chain, (Tlsa(3, 1, 1, spki_sha256(leaf)),), [MX1]).ok
    verdict = verify(chain, (Tlsa(2, 0, 1, full_sha256(ca_cert)),), [MX1])
    assert not verdict.ok and "outside its validity period" in verdict.reason
