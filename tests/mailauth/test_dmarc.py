"""DKIM (through ``verify_dkim``) and DMARC against a corpus signed in the test, keys on the loopback DNS server."""

from __future__ import annotations

import asyncio

import pytest

from dovetail.mailauth import dmarc
from dovetail.mailauth.check import authenticate
from dovetail.mailauth.dkimcheck import verify_dkim
from dovetail.mailauth.dns import Resolver
from dovetail.mailauth.results import SpfResult
from tests.dnsserver import LoopbackDNS

from .corpus import Signer, message


def run(coro):  # noqa: ANN001, ANN201
    return asyncio.run(coro)


def test_org_domain_from_the_bundled_public_suffix_list() -> None:
    assert dmarc.org_domain("a.b.example.co.uk") == "example.co.uk"
    assert dmarc.org_domain("mail.sender.test") == "sender.test"
    assert dmarc.aligned("mail.sender.test", "sender.test", "r")
    assert not dmarc.aligned("mail.sender.test", "sender.test", "s")
    assert not dmarc.aligned("other.co.uk", "example.co.uk", "r")


@pytest.mark.parametrize(("header", "domain", "problem"), [
    (b"From: Alice <alice@Sender.Test>\r\n", "sender.test", ""),
    (b"From: a@x.test, b@x.test\r\n", "x.test", ""),
    (b"From: a@x.test,\r\n b@y.test\r\n", None, "several domains"),
    (b"From: a@x.test\r\nFrom: b@x.test\r\n", None, "2 From headers"),
    (b"Subject: none\r\n", None, "no From header"),
    (b"From: undisclosed-recipients:;\r\n", None, "no address"),
    ("From: a@bücher.test\r\n".encode(), "xn--bcher-kva.test", ""),
])
def test_from_domain(header: bytes, domain: str | None, problem: str) -> None:
    found = dmarc.from_domain(header)
    assert found.domain == domain
    assert problem in found.problem


def test_dkim_pass_fail_and_risks(dns_server: LoopbackDNS, resolver: Resolver) -> None:
    rsa_signer = Signer(dns_server, "sender.test", "rsa1")
    ed_signer = Signer(dns_server, "sender.test", "ed1", kind="ed25519")
    msg = message()
    signed = ed_signer.sign(rsa_signer.sign(msg))
    results = run(verify_dkim(signed, resolver.txt))
    assert [(r.selector, r.result, r.algorithm) for r in results] == [
        ("ed1", "pass", "ed25519-sha256"), ("rsa1", "pass", "rsa-sha256")]
    assert results[1].key_bits == 2048
    tampered = signed.replace(b"see you.", b"send money.")
    assert [r.result for r in run(verify_dkim(tampered, resolver.txt))] == ["fail", "fail"]
    limited = rsa_signer.sign(msg, length=True) + b"appended by someone else\r\n"
    (res,) = run(verify_dkim(limited, resolver.txt))  # l= leaves appended text unsigned: not a pass here
    assert res.result == "policy" and res.body_length_limited and "26 body octets unsigned" in res.reason
    (whole,) = run(verify_dkim(rsa_signer.sign(msg, length=True), resolver.txt))
    assert whole.result == "pass" and whole.body_length_limited  # l= covering the whole body is no risk
    assert run(verify_dkim(msg, resolver.txt)) == []


def test_dkim_bad_input_gives_results_not_exceptions(dns_server: LoopbackDNS, resolver: Resolver) -> None:
    garbage = b"DKIM-Signature: v=1; a=rsa-sha256; d=; this is not a tag list\r\n" + message()
    (res,) = run(verify_dkim(garbage, resolver.txt))
    assert res.result == "permerror"
    nokey = Signer(dns_server, "sender.test", "gone").sign(message())
    dns_server.clear("gone._domainkey.sender.test")
    (res,) = run(verify_dkim(nokey, Resolver([dns_server.nameserver], timeout=1.0).txt))
    assert res.result == "permerror" and "key" in res.reason
    dns_server.fail("down._domainkey.sender.test")
    down = Signer(dns_server, "sender.test", "down").sign(message())
    (res,) = run(verify_dkim(down, resolver.txt))
    assert res.result == "temperror"


def _spf(domain: str, result: str = "pass") -> SpfResult:
    return SpfResult(result, domain, "mfrom", f"x@{domain}")


def test_alignment_and_policies(dns_server: LoopbackDNS, resolver: Resolver) -> None:
    dns_server.txt("_dmarc.sender.test", "v=DMARC1; p=reject; sp=quarantine; adkim=s")
    signer = Signer(dns_server, "mail.sender.test", "s1")
    head = b"From: a@sender.test\r\n"
    # SPF for a subdomain aligns in relaxed mode
    res = run(dmarc.evaluate(head, _spf("bounce.sender.test"), [], resolver))
    assert (res.result, res.policy, res.spf_aligned) == ("pass", "reject", True)
    # DKIM of a subdomain does not align in strict mode; SPF of another domain never aligns
    dk = run(verify_dkim(signer.sign(message(from_="a@sender.test")), resolver.txt))
    res = run(dmarc.evaluate(head, _spf("other.test"), dk, resolver))
    assert (res.result, res.disposition) == ("fail", "reject")
    # a subdomain without its own record gets sp= of the organisational domain's record
    res = run(dmarc.evaluate(b"From: a@news.sender.test\r\n", _spf("other.test"), [], resolver))
    assert (res.result, res.policy, res.disposition) == ("fail", "quarantine", "quarantine")
    # no record at all
    assert run(dmarc.evaluate(b"From: a@plain.test\r\n", _spf("other.test"), [], resolver)).result == "none"


def test_pct_samples_the_policy(dns_server: LoopbackDNS, resolver: Resolver) -> None:
    dns_server.txt("_dmarc.half.test", "v=DMARC1; p=reject; pct=50")
    head = b"From: a@half.test\r\n"
    applied = run(dmarc.evaluate(head, _spf("x.test"), [], resolver, sample=lambda: 0.2))
    spared = run(dmarc.evaluate(head, _spf("x.test"), [], resolver, sample=lambda: 0.7))
    assert applied.disposition == "reject"
    assert spared.disposition == "quarantine"  # RFC 7489 §6.6.4: the next policy down


def test_tree_walk_finds_the_closest_record(dns_server: LoopbackDNS, resolver: Resolver) -> None:
    dns_server.txt("_dmarc.tree.test", "v=DMARC1; p=none")
    dns_server.txt("_dmarc.dept.tree.test", "v=DMARC1; p=reject; sp=quarantine")
    res = run(dmarc.evaluate(b"From: a@x.dept.tree.test\r\n", _spf("o.test"), [], resolver))
    assert (res.policy, res.disposition) == ("quarantine", "quarantine")


def test_two_from_addresses_is_a_reject(resolver: Resolver) -> None:
    res = run(dmarc.evaluate(b"From: a@x.test, b@y.test\r\n", _spf("x.test"), [], resolver))
    assert (res.result, res.disposition) == ("fail", "reject")


def test_policy_lookup_timeout_is_temperror(dns_server: LoopbackDNS) -> None:
    dns_server.silence("_dmarc.slow.test")
    quick = Resolver([dns_server.nameserver], timeout=0.3)
    res = run(dmarc.evaluate(b"From: a@slow.test\r\n", _spf("slow.test", "none"), [], quick))
    assert res.result == "temperror"


def test_authenticate_ties_them_together(dns_server: LoopbackDNS, resolver: Resolver) -> None:
    dns_server.txt("sender.test", "v=spf1 ip4:192.0.2.0/24 -all")
    dns_server.txt("_dmarc.sender.test", "v=DMARC1; p=reject")
    signed = Signer(dns_server, "sender.test").sign(message())
    v = run(authenticate(signed, client_ip="192.0.2.9", helo="mail.sender.test", sender="bounce@sender.test",
                         resolver=resolver))
    assert (v.spf.result, [d.result for d in v.dkim], v.dmarc.result) == ("pass", ["pass"], "pass")
    assert v.log_text() == ("spf=pass dkim=pass (d=sender.test) dmarc=pass "
                            "(p=reject dis=none from=sender.test) arc=none")
