"""A small authoritative DNS server on loopback (dnslib), UDP and TCP on one port, for the tests.

Records are held in a dict and can change while it runs, as a zone being published would. Negative
answers carry an SOA in the authority section (so resolvers cache them for its minimum, RFC 2308);
names can be made to fail (SERVFAIL), to stay silent until the server stops (a timeout for the
client), or to answer with TXT strings split as the test likes. Names marked ``secure`` are answered
with the AD bit set, as a validating resolver answers what DNSSEC proved (for the DANE tests); no
other answer carries it.
"""

from __future__ import annotations

import socket
import threading
from collections import defaultdict

import dns.asyncresolver
import dns.resolver
from dnslib import AAAA, CNAME, MX, PTR, QTYPE, RCODE, RR, SOA, TLSA, TXT, A, DNSLabel
from dnslib.server import BaseResolver, DNSLogger, DNSServer

from dovetail.outbound.dkim import txt_chunks


class _Zone(BaseResolver):
    def __init__(self) -> None:
        self.records: dict[str, dict[str, list[object]]] = defaultdict(lambda: defaultdict(list))
        self.lock = threading.Lock()
        self.queries: list[tuple[str, str]] = []
        self.ttl = 60
        self.negative_ttl = 60  # SOA minimum of negative answers
        self.failing: set[str] = set()  # names answered with SERVFAIL
        self.silent: set[str] = set()  # names answered only when the server stops
        self.secure: set[str] = set()  # names answered with the AD bit (DNSSEC-validated, as a resolver says)
        self.stopping = threading.Event()

    def resolve(self, request, handler):  # noqa: ANN001, ANN201
        reply = request.reply()
        qname = str(request.q.qname).rstrip(".").lower()
        qtype = QTYPE[request.q.qtype]
        with self.lock:
            self.queries.append((qname, qtype))
            silent = qname in self.silent
            # dnslib's reply() copies the query's flags: AD only where this zone says the name is signed
            reply.header.ad = int(qname in self.secure)
            if qname in self.failing:
                reply.header.rcode = RCODE.SERVFAIL
                return reply
        if silent:
            self.stopping.wait()
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        with self.lock:
            rdatas = list(self.records[qname].get(qtype, [])) if qname in self.records else None
            hops = 0
            while rdatas == [] and self.records[qname].get("CNAME") and hops < 8:  # follow aliases in the zone,
                target = self.records[qname]["CNAME"][0]  # as an authoritative server does (loops stop at 8)
                reply.add_answer(RR(DNSLabel(qname + "."), QTYPE.CNAME, rdata=target, ttl=self.ttl))
                qname, hops = str(target.label).rstrip(".").lower(), hops + 1  # type: ignore[attr-defined]
                rdatas = list(self.records[qname].get(qtype, [])) if qname in self.records else None
        if rdatas is None:
            reply.header.rcode = RCODE.NXDOMAIN
        for rdata in rdatas or []:
            reply.add_answer(RR(DNSLabel(qname + "."), getattr(QTYPE, qtype), rdata=rdata, ttl=self.ttl))
        if not rdatas:
            soa = SOA("ns.test.", "hostmaster.test.", (1, 3600, 600, 86400, self.negative_ttl))
            reply.add_auth(RR(DNSLabel(qname + "."), QTYPE.SOA, rdata=soa, ttl=self.negative_ttl))
        return reply

    def count(self, name: str, qtype: str | None = None) -> int:
        """How many queries for ``name`` (of ``qtype``) the server answered so far."""
        key = name.rstrip(".").lower()
        with self.lock:
            return sum(1 for n, t in self.queries if n == key and (qtype is None or t == qtype))


class LoopbackDNS:
    """``with LoopbackDNS() as dns_: dns_.txt(name, value); dns_.resolver()``."""

    def __init__(self) -> None:
        self.zone = _Zone()
        self.port = 0
        self._servers: list[DNSServer] = []

    def start(self) -> LoopbackDNS:
        quiet = DNSLogger(log="-request,-reply,-truncated,-error,-recv,-send,-data", prefix=False)
        for _ in range(20):
            udp = DNSServer(self.zone, address="127.0.0.1", port=0, logger=quiet)
            port = udp.server.server_address[1]
            try:
                tcp = DNSServer(self.zone, address="127.0.0.1", port=port, tcp=True, logger=quiet)
            except OSError:
                udp.server.server_close()
                continue
            self.port = port
            self._servers = [udp, tcp]
            for srv in self._servers:
                srv.start_thread()
            return self
        raise RuntimeError("no free port for the loopback DNS server")

    def stop(self) -> None:
        self.zone.stopping.set()
        for srv in self._servers:
            srv.stop()
            srv.server.server_close()

    def __enter__(self) -> LoopbackDNS:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- records -------------------------------------------------------------------------------

    def _add(self, name: str, qtype: str, rdata: object) -> None:
        with self.zone.lock:
            self.zone.records[name.rstrip(".").lower()][qtype].append(rdata)

    def txt(self, name: str, value: str | list[str]) -> None:
        """A TXT record; a list gives its character-strings as split (RFC 7208 §3.3 joins them)."""
        strings = value if isinstance(value, list) else txt_chunks(value)
        self._add(name, "TXT", TXT([c.encode() for c in strings]))

    def cname(self, name: str, target: str) -> None:
        """An alias: answers for ``name`` carry the CNAME chain (followed inside the zone, loops included)."""
        self._add(name, "CNAME", CNAME(target.rstrip(".") + "."))

    def ptr(self, name: str, target: str) -> None:
        self._add(name, "PTR", PTR(target.rstrip(".") + "."))

    def tlsa(self, name: str, usage: int, selector: int, mtype: int, data: bytes) -> None:
        """A TLSA record (RFC 6698), e.g. ``tlsa("_25._tcp.mx.example.org", 3, 1, 1, sha256)``."""
        self._add(name, "TLSA", TLSA(usage, selector, mtype, data))

    def secure(self, *names: str) -> None:
        """Answer ``names`` with the AD bit set, as a validating resolver does for a signed zone."""
        with self.zone.lock:
            self.zone.secure.update(n.rstrip(".").lower() for n in names)

    def fail(self, name: str) -> None:
        """Answer SERVFAIL for ``name``."""
        with self.zone.lock:
            self.zone.failing.add(name.rstrip(".").lower())

    def silence(self, name: str) -> None:
        """Never answer ``name`` while the server runs (the client times out)."""
        with self.zone.lock:
            self.zone.silent.add(name.rstrip(".").lower())

    @property
    def nameserver(self) -> str:
        """``127.0.0.1:PORT``, as ``dns.nameservers`` takes it."""
        return f"127.0.0.1:{self.port}"

    def mx(self, name: str, host: str, preference: int = 10) -> None:
        self._add(name, "MX", MX(host.rstrip(".") + ".", preference))

    def a(self, name: str, address: str) -> None:
        self._add(name, "A", A(address))

    def aaaa(self, name: str, address: str) -> None:
        self._add(name, "AAAA", AAAA(address))

    def clear(self, name: str, qtype: str | None = None) -> None:
        with self.zone.lock:
            key = name.rstrip(".").lower()
            if qtype is None:
                self.zone.records.pop(key, None)
            elif key in self.zone.records:
                self.zone.records[key].pop(qtype, None)

    # --- clients -------------------------------------------------------------------------------

    def resolver(self) -> dns.resolver.Resolver:
        res = dns.resolver.Resolver(configure=False)
        res.nameservers = ["127.0.0.1"]
        res.port = self.port
        res.timeout = res.lifetime = 2.0
        return res

    def async_resolver(self) -> dns.asyncresolver.Resolver:
        res = dns.asyncresolver.Resolver(configure=False)
        res.nameservers = ["127.0.0.1"]
        res.port = self.port
        res.timeout = res.lifetime = 2.0
        return res

    def dkimpy_dnsfunc(self):  # noqa: ANN201
        """A ``dnsfunc`` for dkimpy's ``verify`` that asks this server."""
        res = self.resolver()

        def dnsfunc(name: bytes | str, timeout: int = 5) -> bytes | None:
            qname = name.decode() if isinstance(name, bytes) else name
            try:
                answer = res.resolve(qname.rstrip("."), "TXT")
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                return None
            return b"".join(b"".join(r.strings) for r in answer)

        return dnsfunc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
