"""Messages of the kinds the internet sends, signed in the test with keys the loopback DNS server publishes."""

from __future__ import annotations

import base64

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from dovetail.outbound.dkim import dns_txt_value
from tests.dnsserver import LoopbackDNS

_RSA_CACHE: dict[int, rsa.RSAPrivateKey] = {}


def message(from_: str = "Alice <alice@sender.test>", to: str = "bob@acme.example", subject: str = "Hello",
            body: str = "Hi Bob,\r\n\r\nsee you.\r\n", extra: str = "") -> bytes:
    return (f"From: {from_}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <m1@sender.test>\r\n"
            f"Date: Sun, 06 Dec 2026 12:00:00 +0000\r\n{extra}\r\n{body}").encode()


class Signer:
    """A DKIM key of ``domain``/``selector`` published on ``dns_``; ``sign`` prepends a signature."""

    def __init__(self, dns_: LoopbackDNS, domain: str, selector: str = "s1", kind: str = "rsa",
                 bits: int = 2048) -> None:
        self.domain, self.selector, self.kind = domain, selector, kind
        if kind == "rsa":
            if bits not in _RSA_CACHE:
                _RSA_CACHE[bits] = rsa.generate_private_key(public_exponent=65537, key_size=bits)
            key = _RSA_CACHE[bits]
            self.private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption())
            txt = dns_txt_value(key)
        else:
            ekey = ed25519.Ed25519PrivateKey.generate()
            raw = ekey.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                     serialization.NoEncryption())
            self.private = base64.b64encode(raw)
            txt = dns_txt_value(ekey)
        dns_.txt(f"{selector}._domainkey.{domain}", txt)

    def sign(self, msg: bytes, length: bool = False, algorithm: bytes | None = None) -> bytes:
        algo = algorithm or (b"rsa-sha256" if self.kind == "rsa" else b"ed25519-sha256")
        sig = dkim.sign(msg, self.selector.encode(), self.domain.encode(), self.private,
                        include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
                        signature_algorithm=algo, length=length)
        return sig + msg
