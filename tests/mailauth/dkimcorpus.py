"""Keys and messages for the DKIM and ARC tests: signed in the test, keys published on the loopback DNS server."""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from dovetail.mailauth.dnserrors import DnsPermError, DnsTempError, TxtLookup, dnspython_txt
from dovetail.outbound.dkim import SigningKey, dns_txt_value

from ..outbound.dnsserver import LoopbackDNS

# RSA-512, refused by RFC 8301; ``cryptography`` no longer generates keys this short.
RSA_512_PEM = b"""-----BEGIN PRIVATE KEY-----
MIIBVgIBADANBgkqhkiG9w0BAQEFAASCAUAwggE8AgEAAkEAtJiVkUr7HGAho1R7
mKd1xzwb4ond8tPiWjjfMwgt/dFW6eipDi4PXVHYCr/kbhletJ/bgwsnTgjm+3Ot
mQo9pQIDAQABAkEAlGbmUTSKUPD1819TCUhi0kukpm2gQxC2amldkHPiRzVB7dgd
j9lIBegAAQTFK8+uM9qburBFbhRr5WV2kjWWKQIhAOzL5ynAo7OGlEWB4XSMLNZ6
ZaSC0e/7kwtBTept+nCTAiEAwz3paK0Lr4PzqzECYf/PfNSeyKnvr9yvojM0n0yV
U+cCIQDoWxy1x6Xan5AWtF+6sWG+A9SBHS1LwxyCys3d35UDqQIhAIndPOT6VGcS
cMxwZfNXVGccKCcfwC1ZUvfg2oal6Ef/AiArCvl/foMwOBXcT5NUtW12FMxpqus4
0mb06IH8d0cSTg==
-----END PRIVATE KEY-----
"""

MESSAGE = (b"From: Alice <alice@acme.example>\r\n"
           b"To: bob@example.org\r\n"
           b"Subject:   Quarterly    numbers\r\n"
           b"\tfolded  part\r\n"
           b"Date: Sat, 28 Nov 2026 10:00:00 +0000\r\n"
           b"Message-ID: <m1@acme.example>\r\n"
           b"MIME-Version: 1.0\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\n"
           b"\r\n"
           b"Hi Bob,  \r\n"
           b"\r\n"
           b"the numbers are   attached.\t\r\n"
           + b"Some more text to make this look like a real message of a couple of kilobytes.\r\n" * 20
           + b"\r\n\r\n")


@dataclass
class Key:
    """A private key with its selector and domain, published on the loopback DNS server."""

    domain: str
    selector: str
    pem: bytes  # PKCS#8
    txt: str

    @property
    def name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"

    def signing_key(self) -> SigningKey:
        return SigningKey.from_pem(self.domain, self.selector, self.pem)

    def dkimpy_sign(self, message: bytes, **kw: object) -> bytes:
        """``dkim.sign`` with this key: the DKIM-Signature header line, CRLF-terminated."""
        algorithm = b"ed25519-sha256" if "k=ed25519" in self.txt else kw.pop("signature_algorithm", b"rsa-sha256")
        pem = self.pem
        if algorithm == b"ed25519-sha256":  # dkimpy takes the raw 32-octet seed, base64
            key = serialization.load_pem_private_key(self.pem, None)
            pem = base64.b64encode(key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                                     serialization.NoEncryption()))
        sig = dkim.sign(message, self.selector.encode(), self.domain.encode(), pem, signature_algorithm=algorithm,
                        linesep=b"\r\n", **kw)  # type: ignore[arg-type]
        return sig


def make_key(domain: str, selector: str, kind: str = "rsa", bits: int = 2048) -> Key:
    if kind == "rsa512":
        private = serialization.load_pem_private_key(RSA_512_PEM, None)
    elif kind == "ed25519":
        private = ed25519.Ed25519PrivateKey.generate()
    else:
        private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return Key(domain, selector, pem, dns_txt_value(private))  # type: ignore[arg-type]


def publish(dns: LoopbackDNS, *keys: Key) -> None:
    for key in keys:
        dns.txt(key.name, key.txt)


def loopback_txt(dns: LoopbackDNS) -> TxtLookup:
    return dnspython_txt(dns.async_resolver())


def dkimpy_verdicts(message: bytes, dns: LoopbackDNS) -> list[bool]:
    """dkimpy's verdict on each DKIM-Signature, top to bottom."""
    out = []
    for i in range(message.lower().count(b"\ndkim-signature:") + message.lower().startswith(b"dkim-signature:")):
        try:
            out.append(bool(dkim.DKIM(message, minkey=1024).verify(idx=i, dnsfunc=dns.dkimpy_dnsfunc())))
        except Exception:  # dkimpy lets some bad keys escape as other errors (nacl's ValueError)
            out.append(False)
    return out


async def failing_txt(name: str) -> list[str]:
    raise DnsTempError(f"{name}: timed out")


async def refused_txt(name: str) -> list[str]:
    raise DnsPermError(f"{name}: answer over the size limit")


def now() -> int:
    return int(time.time())
