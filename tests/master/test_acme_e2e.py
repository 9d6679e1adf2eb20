"""Certificates from a real ACME CA (Pebble) for two tenants' names, served by SNI on every TLS listener.

A running ``dovetail serve`` answers Pebble's HTTP-01 and TLS-ALPN-01 requests on its web listener;
``dovetail cert issue`` orders; then SMTP STARTTLS (MX and submission), IMAP STARTTLS, IMAPS and HTTPS are asked for
each name and must present that name's certificate, issued by Pebble. A forced renewal is served by the
same workers without a restart; with the CA down the old certificate keeps serving and the status says
why; a name that does not point at us is refused before ordering; an unknown name gets the fallback.
"""

from __future__ import annotations

import json
import signal
import socket
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from dovetail import config
from dovetail.privileges import service_owner, write_private_file

from ..certs.helpers import make_pair
from ..certs.pebble import Pebble
from ..dnsserver import LoopbackDNS
from .harness import Master, cli, free_port, wait_for

pytestmark = pytest.mark.timeout(300)


def _read_reply(f) -> str:  # noqa: ANN001
    lines = []
    while True:
        line = f.readline().decode()
        lines.append(line)
        if len(line) < 4 or line[3] != "-":
            return "".join(lines)


def _client_ctx() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the test reads the chain itself
    return ctx


def leaf(port: int, name: str | None, mode: str) -> x509.Certificate:
    """The certificate presented for SNI ``name`` on ``port``: ``smtp`` (STARTTLS), ``imap`` (STARTTLS) or ``tls``."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        if mode == "smtp":
            f = sock.makefile("rb")
            _read_reply(f)
            sock.sendall(b"EHLO client.test\r\n")
            _read_reply(f)
            sock.sendall(b"STARTTLS\r\n")
            assert _read_reply(f).startswith("220")
        elif mode == "imap":
            f = sock.makefile("rb")
            f.readline()
            sock.sendall(b"a STARTTLS\r\n")
            assert b"a OK" in f.readline()
        tls = _client_ctx().wrap_socket(sock, server_hostname=name)
        der = tls.getpeercert(binary_form=True)
        tls.close()
        assert der is not None
        return x509.load_der_x509_certificate(der)
    finally:
        sock.close()


def names_of(cert: x509.Certificate) -> set[str]:
    return set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
               .get_values_for_type(x509.DNSName))


def issuer_cn(cert: x509.Certificate) -> str:
    return str(cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


@pytest.fixture
def setup(tmp_path: Path):  # noqa: ANN201
    with LoopbackDNS() as dns:
        for name in ("mail.alpha.example", "mta-sts.alpha.example", "mail.beta.example", "mx.test.example"):
            dns.a(name, "127.0.0.1")
        dns.a("elsewhere.alpha.example", "192.0.2.7")
        dns.a("mail.gamma.example", "127.0.0.2")  # "ours" by the config, but nothing of ours listens there
        master = Master.create(tmp_path)
        http, https = free_port(), free_port()
        submission, imaps = free_port(), free_port()
        pebble = Pebble(master.data_dir.parent / "pebble", dns.nameserver, http, https)
        for key, value in (("listen.https", f"127.0.0.1:{https}"), ("listen.imaps", f"127.0.0.1:{imaps}"),
                           ("acme.directory_url", pebble.directory_url), ("acme.ca_bundle", str(pebble.ca_bundle)),
                           ("acme.email", "ops@alpha.example"), ("dns.nameservers", [dns.nameserver]),
                           ("acme.public_addresses", ["127.0.0.1", "127.0.0.2"]), ("acme.http01_port", http)):
            config.set_value(master.data_dir, key, value)
        for args in (["tenant", "add", "beta"], ["tenant", "add", "alpha"],
                     ["domain", "add", "alpha.example", "--tenant", "alpha"],
                     ["domain", "add", "beta.example", "--tenant", "beta"]):
            assert cli(master.data_dir, *args).returncode == 0
        pebble.start()
        master.start("--http", f"127.0.0.1:{http}", "--submission", f"127.0.0.1:{submission}")
        ports = {"smtp": (master.smtp_port, "smtp"), "submission": (submission, "smtp"), "imaps": (imaps, "tls"),
                 "imap": (master.imap_port, "imap"), "https": (https, "tls")}
        try:
            yield master, pebble, ports
        finally:
            master.stop()
            master.cleanup()
            pebble.stop()


def test_acme_certificates_served_by_sni_renewed_without_restart(setup) -> None:  # noqa: ANN001
    master, pebble, ports = setup
    done = cli(master.data_dir, "cert", "issue", "--domain", "alpha.example", "--challenge", "http-01")
    assert done.returncode == 0, done.stdout + done.stderr + pebble.log.read_text()[-3000:]
    done = cli(master.data_dir, "cert", "issue", "mail.beta.example", "--challenge", "tls-alpn-01")
    assert done.returncode == 0, done.stdout + done.stderr + pebble.log.read_text()[-3000:]

    served = {}
    for label, (port, mode) in ports.items():
        for name in ("mail.alpha.example", "mail.beta.example"):
            try:
                cert = leaf(port, name, mode)
            except ssl.SSLError as exc:
                raise AssertionError(f"{label} {name}: {exc}\n" + master.log()[-3000:]) from None
            assert name in names_of(cert), (label, name, names_of(cert))
            assert issuer_cn(cert).startswith("Pebble Intermediate"), (label, issuer_cn(cert))
            served[(label, name)] = cert.serial_number
        assert names_of(leaf(port, "mta-sts.alpha.example", mode)) == {"mail.alpha.example", "mta-sts.alpha.example"}
        unknown = leaf(port, "nobody.unknown.example", mode)  # not ours: the fallback, no failed handshake
        assert "mx.test.example" in names_of(unknown) and not issuer_cn(unknown).startswith("Pebble")

    listed = json.loads(cli(master.data_dir, "cert", "list", "--json").stdout)
    assert {tuple(c["names"]) for c in listed} == {("mail.alpha.example", "mta-sts.alpha.example"),
                                                   ("mail.beta.example",)}
    assert all(c["status"] == "valid" and c["issuer"].startswith("Pebble") and c["days_left"] > 0 for c in listed)
    key = (master.data_dir / "tls" / "certs" / "mail.alpha.example" / "key.pem").stat()
    assert key.st_mode & 0o777 == 0o600

    # Forced renewal: the same workers serve the new certificate.
    pids = {s: master.worker_pids(s) for s in ("smtpd", "submission", "imapd", "web")}
    old_serial = served[("smtp", "mail.alpha.example")]
    alpha_key = master.data_dir / "tls" / "certs" / "mail.alpha.example" / "key.pem"
    old_key = alpha_key.read_bytes()
    done = cli(master.data_dir, "cert", "renew", "--force", "mail.alpha.example", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    new_serial = int(json.loads(done.stdout)[0]["serial"], 16)
    assert new_serial != old_serial
    assert alpha_key.read_bytes() == old_key  # renewals keep the key: published DANE 3 1 1 records stay true
    done = cli(master.data_dir, "cert", "renew", "--force", "--new-key", "mail.alpha.example", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert alpha_key.read_bytes() != old_key
    new_serial = int(json.loads(done.stdout)[0]["serial"], 16)
    for label, (port, mode) in ports.items():
        wait_for(lambda p=port, m=mode: leaf(p, "mail.alpha.example", m).serial_number == new_serial, 10,
                 f"{label} serving the renewed certificate")
    assert {s: master.worker_pids(s) for s in pids} == pids

    # Files replaced by hand are served after SIGHUP (the master tells the listeners to load the store again).
    folder = master.data_dir / "tls" / "certs" / "mail.beta.example"
    chain, key_pem = make_pair(["mail.beta.example"], issuer="Hand Placed CA")
    owner = service_owner("dovetail")
    write_private_file(folder / "key.pem", key_pem, owner)
    write_private_file(folder / "fullchain.pem", chain, owner)
    master.signal(signal.SIGHUP)
    wait_for(lambda: issuer_cn(leaf(ports["smtp"][0], "mail.beta.example", "smtp")) == "Hand Placed CA", 15,
             "the hand-placed certificate after SIGHUP")

    # The CA is down: the renewal fails with a clear status, the certificate in use keeps serving.
    pebble.stop()
    done = cli(master.data_dir, "cert", "renew", "--force", "mail.alpha.example")
    assert done.returncode == 1 and "the CA cannot be reached" in done.stdout
    status = {c["id"]: c["status"] for c in json.loads(cli(master.data_dir, "cert", "list", "--json").stdout)}
    assert "1 failed attempt(s)" in status["mail.alpha.example"] and "cannot be reached" in status["mail.alpha.example"]
    assert leaf(ports["smtp"][0], "mail.alpha.example", "smtp").serial_number == new_serial
    pebble.start()

    # A name whose DNS points elsewhere is refused before any order, with the reason.
    done = cli(master.data_dir, "cert", "issue", "elsewhere.alpha.example")
    assert done.returncode == 1
    assert "refused before ordering" in done.stdout and "192.0.2.7" in done.stdout

    # A challenge the CA cannot validate (nothing of ours answers on 127.0.0.2): the order fails, nothing stored.
    done = cli(master.data_dir, "cert", "issue", "mail.gamma.example")
    assert done.returncode == 1 and "challenge failed" in done.stdout, done.stdout
    assert not (master.data_dir / "tls" / "certs" / "mail.gamma.example" / "fullchain.pem").exists()

    metrics = master_metrics(ports["https"][0])
    assert 'dovetail_cert_days_to_expiry{name="mail.beta.example"}' in metrics


def master_metrics(https_port: int) -> str:
    import httpx

    got = httpx.get(f"https://127.0.0.1:{https_port}/metrics", verify=False, timeout=10)
    assert got.status_code == 200
    return got.text
