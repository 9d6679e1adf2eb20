"""Outbound DANE for SMTP (RFC 7672): TLSA lookups and matching the MX host's certificate against them.

DANE trusts DNSSEC, and this module does not validate signatures itself: as Postfix with
``smtp_dns_support_level = dnssec``, it asks a *validating* resolver (``outbound.dane_resolver``, a
local one such as unbound) with the DO and AD bits set and believes the AD bit of its answers. A
resolver that does not validate never sets AD, so DANE then never applies (mail goes as before);
one that sets AD without validating, or a path to it that can be tampered with, would make DANE
trust forged records: hence the setting is off by default and the resolver must be local.

What the records mean (RFC 7672 §3.1): only DANE-TA(2) and DANE-EE(3) are usable for SMTP;
PKIX-TA(0)/PKIX-EE(1) are not (an MX host has no shared set of CAs to be checked against), so
a TLSA RRset without a usable record means opportunistic TLS. DANE-EE matches the server's own
certificate or key and ignores names and validity dates (§3.1.1). DANE-TA names a trust anchor that
the server presents in its chain (§3.1.2, a digest cannot be used otherwise): the chain from the
leaf up to that certificate must verify signature by signature, be within its validity dates below
the anchor, and the leaf must carry the MX host name or the next-hop domain (§3.2.2).

The server's whole chain is needed for DANE-TA. Python 3.11 and 3.12 give only the leaf through
``getpeercert(binary_form=True)``; their ``_ssl`` object has ``get_unverified_chain`` (public as
``SSLObject.get_unverified_chain`` from 3.13), which returns what the peer sent. :func:`peer_chain`
uses the public method where there is one, then the private one, then the leaf alone: with the
leaf alone DANE-EE works in full and DANE-TA matches only when the anchor is the leaf itself.
OpenSSL's own DANE support (``SSL_dane_enable``) is not reachable from Python's ``ssl`` module,
hence the matching here, with the ``cryptography`` library for parsing and signatures.
"""

from __future__ import annotations

import datetime
import hashlib
import ssl
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.name
import dns.nameserver
import dns.resolver
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from dovetail.mailauth.dns import MAX_CACHE_ENTRIES, parse_nameserver

DANE_TA, DANE_EE = 2, 3
_ENCODING_DER = getattr(ssl, "ENCODING_DER", 2)  # _ssl.ENCODING_DER, not re-exported by ssl before 3.13
_MATCHING = {1: hashlib.sha256, 2: hashlib.sha512}


@dataclass(frozen=True, slots=True)
class Tlsa:
    usage: int
    selector: int
    mtype: int
    data: bytes

    @property
    def usable(self) -> bool:
        """RFC 7672 §3.1 and RFC 7671 §3: DANE-TA/DANE-EE with a known selector and matching type."""
        return self.usage in (DANE_TA, DANE_EE) and self.selector in (0, 1) and self.mtype in (0, 1, 2)

    def __str__(self) -> str:
        return f"{self.usage} {self.selector} {self.mtype} {self.data.hex()[:16]}..."


@dataclass(frozen=True, slots=True)
class TlsaAnswer:
    """What DNS says about ``_PORT._tcp.<host>``: ``records`` only when the answer was secure (AD);
    ``error`` when it could not be had (SERVFAIL, timeout), which for a secure host means no delivery."""

    name: str
    records: tuple[Tlsa, ...] = ()
    secure: bool = False
    error: str = ""

    @property
    def usable(self) -> tuple[Tlsa, ...]:
        return tuple(r for r in self.records if r.usable)


def validating_resolver(nameservers: list[str] | None = None, timeout: float = 5.0) -> dns.asyncresolver.Resolver:
    """A dnspython resolver whose queries ask for DNSSEC (DO and AD set), so a validating resolver
    answers with the AD bit on what it validated. ``nameservers`` empty: the system's."""
    if nameservers:
        res = dns.asyncresolver.Resolver(configure=False)
        res.nameservers = [dns.nameserver.Do53Nameserver(*parse_nameserver(n)) for n in nameservers]
    else:
        res = dns.asyncresolver.Resolver()
    res.timeout = res.lifetime = timeout
    res.use_edns(0, dns.flags.DO, 1232)
    res.flags = dns.flags.RD | dns.flags.AD
    res.cache = dns.resolver.LRUCache(MAX_CACHE_ENTRIES)
    return res


def authenticated(answer: dns.resolver.Answer | None) -> bool:
    """The AD bit of the answer's response (what the validating resolver vouches for)."""
    response = getattr(answer, "response", None)
    return bool(response is not None and response.flags & dns.flags.AD)


async def lookup_tlsa(resolver: dns.asyncresolver.Resolver, host: str, port: int = 25) -> TlsaAnswer:
    """The TLSA records of ``host`` for ``port``; an insecure answer carries none (RFC 7672 §2.2)."""
    name = f"_{port}._tcp.{host.rstrip('.')}"
    try:
        answer = await resolver.resolve(dns.name.from_text(name + "."), "TLSA", search=False,
                                        raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN:
        return TlsaAnswer(name)
    except dns.exception.Timeout:
        return TlsaAnswer(name, error="timed out")
    except dns.resolver.NoNameservers:
        return TlsaAnswer(name, error="SERVFAIL")
    except dns.exception.DNSException as exc:
        return TlsaAnswer(name, error=exc.__class__.__name__)
    secure = authenticated(answer)
    if not secure or answer.rrset is None:
        return TlsaAnswer(name, secure=secure)
    records = tuple(Tlsa(r.usage, r.selector, r.mtype, bytes(r.cert)) for r in answer.rrset)
    return TlsaAnswer(name, records, secure=True)


def peer_chain(sslobj: ssl.SSLObject | ssl.SSLSocket) -> list[bytes]:
    """The DER certificates the server sent, leaf first (see the module docstring for why three ways)."""
    for owner in (sslobj, getattr(sslobj, "_sslobj", None)):
        getter = getattr(owner, "get_unverified_chain", None)
        if getter is None:
            continue
        chain = getter() or []
        out = [c if isinstance(c, bytes) else c.public_bytes(_ENCODING_DER) for c in chain]
        if out:
            return out
    leaf = sslobj.getpeercert(binary_form=True)
    return [leaf] if leaf else []


def _selected(cert: x509.Certificate, selector: int) -> bytes:
    if selector == 0:
        return cert.public_bytes(Encoding.DER)
    return cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def matches(record: Tlsa, cert: x509.Certificate) -> bool:
    """RFC 6698 §2.1: the selected part of ``cert`` (full certificate or SPKI), hashed as ``mtype`` says."""
    selected = _selected(cert, record.selector)
    digest = selected if record.mtype == 0 else _MATCHING[record.mtype](selected).digest()
    return digest == record.data


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    reason: str
    record: Tlsa | None = None


def verify(chain_der: list[bytes], records: tuple[Tlsa, ...], names: list[str],
           now: datetime.datetime | None = None) -> Verdict:
    """Whether the presented chain satisfies one of the usable ``records``; ``names`` are the reference
    identifiers for DANE-TA (the MX host name, then the next-hop domain)."""
    usable = [r for r in records if r.usable]
    if not chain_der:
        return Verdict(False, "the server presented no certificate")
    try:
        chain = [x509.load_der_x509_certificate(c) for c in chain_der]
    except ValueError as exc:
        return Verdict(False, f"the server's certificate cannot be parsed: {exc}")
    leaf = chain[0]
    for record in usable:
        if record.usage == DANE_EE and matches(record, leaf):
            return Verdict(True, "DANE-EE", record)
    why = "no TLSA record matches the server's certificate"
    for record in usable:
        if record.usage != DANE_TA:
            continue
        anchor = next((i for i, cert in enumerate(chain) if matches(record, cert)), None)
        if anchor is None:
            continue
        trouble = _chain_trouble(chain[:anchor + 1], now or datetime.datetime.now(datetime.UTC))
        if trouble:
            why = trouble
            continue
        if not any(_name_matches(leaf, name) for name in names):
            why = f"the certificate names none of {', '.join(names)}"
            continue
        return Verdict(True, "DANE-TA", record)
    return Verdict(False, why)


def _chain_trouble(path: list[x509.Certificate], now: datetime.datetime) -> str:
    """Why the path from the leaf up to the anchor (last) does not verify, or ""."""
    for child, parent in zip(path, path[1:], strict=False):
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature) as exc:
            return f"certificate {child.subject.rfc4514_string()} is not issued by the trust anchor chain ({exc})"
    for cert in path[:-1]:  # the anchor's own dates do not matter (RFC 7671 §5.2.2)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            return f"certificate {cert.subject.rfc4514_string()} is outside its validity period"
    return ""


def _name_matches(cert: x509.Certificate, name: str) -> bool:
    """RFC 6125 matching of a DNS name: subjectAltName dNSNames (``*.`` covers one leftmost label),
    the subject CN only when there are none."""
    name = name.rstrip(".").lower()
    try:
        dns_names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
            .get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        dns_names = [str(a.value) for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
    for pattern in dns_names:
        pattern = pattern.rstrip(".").lower()
        if pattern == name:
            return True
        if pattern.startswith("*."):
            head, _, rest = name.partition(".")
            if head and rest == pattern[2:]:
                return True
    return False


def tlsa_record_for(cert_pem: bytes, port: int = 25, host: str = "") -> str:
    """The ``3 1 1`` TLSA record (SHA-256 of the key) of a PEM certificate, as a zone line when ``host``
    is given: what to publish so that other servers can use DANE towards us."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    digest = hashlib.sha256(_selected(cert, 1)).hexdigest()
    return f"_{port}._tcp.{host.rstrip('.')}. IN TLSA 3 1 1 {digest}" if host else f"3 1 1 {digest}"
