"""The process's resolver: answers cached for their TTL, negative answers for the SOA minimum, failures
as temporary errors, and the ``dns.nameservers`` setting."""

from __future__ import annotations

import asyncio
import time

import pytest

from dovetail.config import KEY_INDEX
from dovetail.mailauth.dns import DnsTempError, Resolver, parse_nameserver
from tests.dnsserver import LoopbackDNS


def test_positive_answers_live_for_their_ttl(dns_server: LoopbackDNS) -> None:
    dns_server.zone.ttl = 1
    dns_server.txt("t.test", "one")
    res = Resolver([dns_server.nameserver], timeout=1.0)
    assert asyncio.run(res.txt("t.test")).records == ("one",)
    assert asyncio.run(res.txt("t.test")).records == ("one",)
    assert dns_server.zone.count("t.test") == 1
    time.sleep(1.1)  # the TTL itself is what is tested
    assert asyncio.run(res.txt("t.test")).records == ("one",)
    assert dns_server.zone.count("t.test") == 2


def test_negative_answers_are_cached_for_the_soa_minimum(dns_server: LoopbackDNS) -> None:
    dns_server.a("host.test", "192.0.2.1")
    res = Resolver([dns_server.nameserver], timeout=1.0)
    for _ in range(3):
        assert asyncio.run(res.txt("host.test")).void  # NODATA
        assert asyncio.run(res.txt("missing.test")).nxdomain
    assert dns_server.zone.count("host.test", "TXT") == 1 and dns_server.zone.count("missing.test") == 1
    dns_server.zone.negative_ttl = 0
    for _ in range(2):
        asyncio.run(res.txt("other-missing.test"))
    assert dns_server.zone.count("other-missing.test") == 2  # SOA minimum 0: not cached


def test_failures_are_temporary_errors(dns_server: LoopbackDNS) -> None:
    dns_server.fail("bad.test")
    dns_server.silence("slow.test")
    res = Resolver([dns_server.nameserver], timeout=0.3)
    with pytest.raises(DnsTempError, match="SERVFAIL"):
        asyncio.run(res.txt("bad.test"))
    with pytest.raises(DnsTempError, match="timed out"):
        asyncio.run(res.txt("slow.test"))
    with pytest.raises(DnsTempError, match="not a domain name"):
        asyncio.run(res.txt("a..b"))


def test_txt_strings_are_joined(dns_server: LoopbackDNS) -> None:
    dns_server.txt("split.test", ["v=spf1 ", "ip4:192.0.2.1", " -all"])
    res = Resolver([dns_server.nameserver], timeout=1.0)
    assert asyncio.run(res.txt("split.test")).records == ("v=spf1 ip4:192.0.2.1 -all",)


def test_nameserver_setting() -> None:
    parse = KEY_INDEX["dns.nameservers"].parse
    assert parse("127.0.0.1:5353, 192.0.2.53 [::1]:53") == ["127.0.0.1:5353", "192.0.2.53", "[::1]:53"]
    assert parse("") == [] and parse(["10.0.0.1"]) == ["10.0.0.1"]
    with pytest.raises(ValueError, match="not a nameserver"):
        parse("dns.example.com")
    assert [parse_nameserver(x) for x in ("127.0.0.1:5353", "192.0.2.53", "[::1]:5300", "::1")] == [
        ("127.0.0.1", 5353), ("192.0.2.53", 53), ("::1", 5300), ("::1", 53)]


def test_cname_loop_is_a_temporary_error_that_says_so(dns_server: LoopbackDNS) -> None:
    """A looping alias gets what a recursive resolver gives for it (SERVFAIL): a temperror, named as a loop."""
    dns_server.cname("loop.test", "loop2.test")
    dns_server.cname("loop2.test", "loop.test")
    dns_server.cname("alias.test", "real.test")
    dns_server.txt("real.test", "v=spf1 -all")
    res = Resolver([dns_server.nameserver], timeout=1.0)
    assert asyncio.run(res.txt("alias.test")).records == ("v=spf1 -all",)
    with pytest.raises(DnsTempError, match="CNAME chain too long"):
        asyncio.run(res.txt("loop.test"))
