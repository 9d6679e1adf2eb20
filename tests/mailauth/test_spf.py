"""SPF (RFC 7208) against zones served by the loopback DNS server, and the same cases through pyspf."""

from __future__ import annotations

import asyncio

import dns.resolver
import pytest
import spf as pyspf

from dovetail.mailauth import spf
from dovetail.mailauth.dns import Resolver
from tests.dnsserver import LoopbackDNS


def check(resolver: Resolver, ip: str, sender: str, helo: str = "client.test", scope: str = "mfrom") -> spf.SpfResult:
    domain = sender.rpartition("@")[2] if scope == "mfrom" else helo
    return asyncio.run(spf.check_host(ip, domain, sender, helo, resolver, scope=scope))


@pytest.fixture
def zones(dns_server: LoopbackDNS) -> LoopbackDNS:
    d = dns_server
    d.txt("pass.test", "v=spf1 ip4:192.0.2.0/24 -all")
    d.txt("soft.test", "v=spf1 ip4:192.0.2.1 ~all")
    d.txt("neutral.test", "v=spf1 ?all")
    d.txt("two.test", "v=spf1 -all")
    d.txt("two.test", "v=spf1 +all")
    d.txt("split.test", ["v=spf1 ip4:198.51", ".100.7 -all"])
    d.txt("a.test", "v=spf1 a a:web.a.test/24 -all")
    d.a("a.test", "203.0.113.10")
    d.a("web.a.test", "198.51.100.77")
    d.txt("mx.test", "v=spf1 mx -all")
    d.mx("mx.test", "mail.mx.test")
    d.a("mail.mx.test", "203.0.113.25")
    d.txt("v6.test", "v=spf1 ip6:2001:db8::/32 -all")
    d.txt("inc.test", "v=spf1 include:pass.test include:soft.test -all")
    d.txt("redir.test", "v=spf1 redirect=pass.test")
    d.txt("redirnone.test", "v=spf1 redirect=nothing.test")
    d.txt("exists.test", "v=spf1 exists:%{i}.allow.exists.test -all")
    d.a("192.0.2.44.allow.exists.test", "127.0.0.2")
    d.txt("macro.test", "v=spf1 exists:%{l1r+-}.%{d2} -all")
    d.a("jane.macro.test", "127.0.0.2")
    d.txt("exp.test", "v=spf1 -all exp=why.exp.test")
    d.txt("why.exp.test", "%{i} is not one of %{d}'s senders")
    d.txt("ptr.test", "v=spf1 ptr -all")
    d.ptr("9.113.0.203.in-addr.arpa", "host.ptr.test")
    d.a("host.ptr.test", "203.0.113.9")
    d.txt("bad.test", "v=spf1 ip4:192.0.2.1 frobnicate -all")
    d.txt("helo.test", "v=spf1 ip4:192.0.2.99 -all")
    # 11 DNS-querying terms: one too many
    d.txt("deep.test", "v=spf1 " + " ".join(f"include:l{i}.deep.test" for i in range(11)) + " -all")
    for i in range(11):
        d.txt(f"l{i}.deep.test", "v=spf1 ip4:10.0.0.1 -all" if i < 10 else "v=spf1 ip4:192.0.2.5 -all")
    # three names that do not exist: one void lookup too many
    d.txt("void.test", "v=spf1 a:n1.void.test a:n2.void.test a:n3.void.test ip4:192.0.2.5 -all")
    d.txt("twovoid.test", "v=spf1 a:n1.void.test a:n2.void.test ip4:192.0.2.5 -all")
    d.txt("loop.test", "v=spf1 include:loop.test -all")
    return d


CASES = [
    ("192.0.2.5", "a@pass.test", "pass"),
    ("203.0.113.1", "a@pass.test", "fail"),
    ("203.0.113.1", "a@soft.test", "softfail"),
    ("203.0.113.1", "a@neutral.test", "neutral"),
    ("203.0.113.1", "a@nothing.test", "none"),
    ("203.0.113.1", "a@two.test", "permerror"),
    ("198.51.100.7", "a@split.test", "pass"),
    ("203.0.113.10", "a@a.test", "pass"),
    ("198.51.100.200", "a@a.test", "pass"),
    ("203.0.113.11", "a@a.test", "fail"),
    ("203.0.113.25", "a@mx.test", "pass"),
    ("203.0.113.26", "a@mx.test", "fail"),
    ("2001:db8::1", "a@v6.test", "pass"),
    ("2001:db9::1", "a@v6.test", "fail"),
    ("192.0.2.5", "a@inc.test", "pass"),
    ("203.0.113.1", "a@inc.test", "fail"),
    ("192.0.2.5", "a@redir.test", "pass"),
    ("203.0.113.1", "a@redir.test", "fail"),
    ("192.0.2.5", "a@redirnone.test", "permerror"),
    ("192.0.2.44", "a@exists.test", "pass"),
    ("192.0.2.45", "a@exists.test", "fail"),
    ("192.0.2.45", "jane@macro.test", "pass"),
    ("192.0.2.45", "john@macro.test", "fail"),
    ("203.0.113.9", "a@ptr.test", "pass"),
    ("203.0.113.8", "a@ptr.test", "fail"),
    ("192.0.2.1", "a@bad.test", "permerror"),
    ("192.0.2.5", "a@deep.test", "permerror"),
    ("192.0.2.5", "a@void.test", "permerror"),
    ("192.0.2.5", "a@twovoid.test", "pass"),
    ("192.0.2.5", "a@loop.test", "permerror"),
    ("::ffff:192.0.2.5", "a@pass.test", "pass"),
]


@pytest.mark.parametrize(("ip", "sender", "expected"), CASES)
def test_results(zones: LoopbackDNS, resolver: Resolver, ip: str, sender: str, expected: str) -> None:
    assert check(resolver, ip, sender).result == expected


@pytest.mark.filterwarnings("ignore:please use dns.resolver.resolve:DeprecationWarning")
def test_same_results_as_pyspf(zones: LoopbackDNS, resolver: Resolver, monkeypatch: pytest.MonkeyPatch) -> None:
    """pyspf, asking the same loopback server, gives the same result for every case."""
    monkeypatch.setattr(dns.resolver, "default_resolver", zones.resolver())
    ours, theirs = [], []
    for ip, sender, _ in CASES:
        ours.append(check(resolver, ip, sender).result)
        result, _ = pyspf.check2(i=ip, s=sender, h="client.test", querytime=5)
        theirs.append(result)
    assert list(zip([c[:2] for c in CASES], ours, strict=True)) == list(zip([c[:2] for c in CASES], theirs,
                                                                            strict=True))


def test_lookup_limit_says_why(zones: LoopbackDNS, resolver: Resolver) -> None:
    res = check(resolver, "192.0.2.5", "a@deep.test")
    assert res.result == "permerror" and "more than 10 DNS lookups" in res.reason
    assert "void" in check(resolver, "192.0.2.5", "a@void.test").reason


def test_explanation_of_a_fail(zones: LoopbackDNS, resolver: Resolver) -> None:
    res = check(resolver, "203.0.113.1", "a@exp.test")
    assert res.result == "fail"
    assert res.explanation == "203.0.113.1 is not one of exp.test's senders"


def test_helo_identity(zones: LoopbackDNS, resolver: Resolver) -> None:
    assert check(resolver, "192.0.2.99", "", helo="helo.test", scope="helo").result == "pass"
    assert check(resolver, "192.0.2.98", "", helo="helo.test", scope="helo").result == "fail"
    assert check(resolver, "192.0.2.98", "", helo="[192.0.2.98]", scope="helo").result == "none"


def test_timeout_is_temperror(zones: LoopbackDNS) -> None:
    zones.silence("slow.test")
    quick = Resolver([zones.nameserver], timeout=0.3)
    res = check(quick, "192.0.2.5", "a@slow.test")
    assert res.result == "temperror" and "timed out" in res.reason


def test_servfail_in_an_include_is_temperror(zones: LoopbackDNS, resolver: Resolver) -> None:
    zones.txt("broken.test", "v=spf1 include:down.test -all")
    zones.fail("down.test")
    assert check(resolver, "192.0.2.5", "a@broken.test").result == "temperror"


def test_lookups_are_cached(zones: LoopbackDNS, resolver: Resolver) -> None:
    for _ in range(3):
        assert check(resolver, "192.0.2.5", "a@inc.test").result == "pass"
        assert check(resolver, "192.0.2.5", "a@nothing.test").result == "none"
    assert zones.zone.count("inc.test", "TXT") == 1
    assert zones.zone.count("nothing.test", "TXT") == 1  # NXDOMAIN kept for the SOA minimum


def test_huge_answer_is_handled(zones: LoopbackDNS, resolver: Resolver) -> None:
    """A TXT set far beyond UDP size goes over TCP and is judged like any other."""
    for i in range(60):
        zones.txt("huge.test", f"filler-{i}-" + "x" * 200)
    zones.txt("huge.test", "v=spf1 ip4:192.0.2.5 -all")
    assert check(resolver, "192.0.2.5", "a@huge.test").result == "pass"


def test_non_ascii_domain_gives_a_result(zones: LoopbackDNS, resolver: Resolver) -> None:
    zones.txt("xn--bcher-kva.test", "v=spf1 ip4:192.0.2.5 -all")
    res = asyncio.run(spf.check_host("192.0.2.5", "bücher.test", "a@bücher.test", "h.test", resolver))
    assert res.result == "pass"
