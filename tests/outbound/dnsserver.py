"""A small authoritative DNS server on loopback (dnslib), UDP and TCP on one port, for the tests.

Records are held in a dict and can change while it runs, as a zone being published would.
"""

from __future__ import annotations

import socket
import threading
from collections import defaultdict

import dns.asyncresolver
import dns.resolver
from dnslib import AAAA, MX, QTYPE, RCODE, RR, TXT, A, DNSLabel
from dnslib.server import BaseResolver, DNSLogger, DNSServer

from dovetail.outbound.dkim import txt_chunks


class _Zone(BaseResolver):
    def __init__(self) -> None:
        self.records: dict[str, dict[str, list[object]]] = defaultdict(lambda: defaultdict(list))
        self.lock = threading.Lock()
        self.queries: list[tuple[str, str]] = []

    def resolve(self, request, handler):  # noqa: ANN001, ANN201
        reply = request.reply()
        qname = str(request.q.qname).rstrip(".").lower()
        qtype = QTYPE[request.q.qtype]
        with self.lock:
            self.queries.append((qname, qtype))
            if qname not in self.records:
                reply.header.rcode = RCODE.NXDOMAIN
                return reply
            for rdata in self.records[qname].get(qtype, []):
                reply.add_answer(RR(DNSLabel(qname + "."), getattr(QTYPE, qtype), rdata=rdata, ttl=60))
        return reply


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

    def txt(self, name: str, value: str) -> None:
        self._add(name, "TXT", TXT([c.encode() for c in txt_chunks(value)]))

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
