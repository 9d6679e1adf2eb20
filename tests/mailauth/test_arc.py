"""ARC: chains made by dkimpy verified here, our seals verified by dkimpy, keys on loopback DNS."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import dkim
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dovetail.mailauth.arc import ArcResult, seal, verify_arc
from dovetail.mailauth.dkimverify import KeyCache, verify_dkim

from ..outbound.dnsserver import LoopbackDNS
from .dkimcorpus import MESSAGE, Key, loopback_txt, make_key, publish, refused_txt


@pytest.fixture(scope="module")
def dns() -> Iterator[LoopbackDNS]:
    with LoopbackDNS() as server:
        yield server


@pytest.fixture(scope="module")
def keys(dns: LoopbackDNS) -> dict[str, Key]:
    made = {"author": make_key("acme.example", "a1"), "list": make_key("lists.example", "arc"),
            "relay": make_key("relay.example", "r1"), "ours": make_key("forward.example", "fwd")}
    publish(dns, *made.values())
    return made


def arc(message: bytes, dns: LoopbackDNS) -> ArcResult:
    return asyncio.run(verify_arc(message, loopback_txt(dns), keys=KeyCache()))


def dkimpy_arc(message: bytes, dns: LoopbackDNS) -> bytes:
    cv, _results, _reason = dkim.arc_verify(message, dnsfunc=dns.dkimpy_dnsfunc())
    return cv


def dkimpy_seal(message: bytes, key: Key, results: str) -> bytes:
    """What a list server running dkimpy does: stamp its A-R, then seal with ``arc_sign``."""
    with_ar = f"Authentication-Results: {key.domain}; {results}\r\n".encode() + message
    lines = dkim.arc_sign(with_ar, key.selector.encode(), key.domain.encode(), key.pem, key.domain.encode())
    assert len(lines) == 3, lines
    return b"".join(lines) + message


def through_list(keys: dict[str, Key]) -> bytes:
    """An author's signed message, then a mailing list that tags the subject and appends a footer."""
    signed = keys["author"].dkimpy_sign(MESSAGE) + MESSAGE
    listed = (signed.replace(b"Subject:   Quarterly", b"Subject: [team] Quarterly")
              + b"--\r\nteam mailing list\r\nhttps://lists.example/team\r\n")
    listed = b"List-Id: <team.lists.example>\r\n" + listed
    return dkimpy_seal(listed, keys["list"], "dkim=pass header.d=acme.example; arc=none")


def test_mailing_list_message_with_broken_dkim_and_a_valid_chain(dns, keys) -> None:
    listed = through_list(keys)
    [dk] = asyncio.run(verify_dkim(listed, loopback_txt(dns), keys=KeyCache()))
    assert dk.result == "fail"  # the list changed subject and body
    result = arc(listed, dns)
    assert dkimpy_arc(listed, dns) == b"pass"
    assert (result.result, result.instances, result.sealers, result.oldest_pass) == (
        "pass", 1, ("lists.example",), 0)
    assert result.authres() == "arc=pass (i=1 sealed by lists.example) header.oldest-pass=0"
    assert result.authres("192.0.2.7").endswith(" header.oldest-pass=0 smtp.remote-ip=192.0.2.7")


def test_two_hop_chain_and_tampering(dns, keys) -> None:
    listed = through_list(keys)
    relayed = dkimpy_seal(listed, keys["relay"], "dkim=fail header.d=acme.example; arc=pass")
    assert dkimpy_arc(relayed, dns) == b"pass"
    result = arc(relayed, dns)
    assert (result.result, result.instances, result.sealers) == ("pass", 2, ("lists.example", "relay.example"))
    tampered = relayed.replace(b"team mailing list", b"evil mailing list")
    assert dkimpy_arc(tampered, dns) == b"fail"
    bad = arc(tampered, dns)
    assert bad.result == "fail" and "ARC-Message-Signature i=2" in bad.reason
    # a changed older ARC-Authentication-Results breaks the seals, not the newest AMS
    forged = relayed.replace(b"ARC-Authentication-Results: i=1; lists.example;",
                             b"ARC-Authentication-Results: i=1; lists.example; spf=pass;")
    assert forged != relayed and dkimpy_arc(forged, dns) == b"fail"
    assert arc(forged, dns).result == "fail" and "ARC-Seal" in arc(forged, dns).reason


def test_structural_faults_fail(dns, keys) -> None:
    listed = through_list(keys)
    assert arc(MESSAGE, dns) == ArcResult("none")
    assert arc(listed.replace(b"ARC-Authentication-Results: i=1", b"X-Was: i=1"), dns).reason == \
        "ARC set i=1 is incomplete"
    assert arc(listed.replace(b"cv=none", b"cv=pass"), dns).reason == "ARC-Seal i=1 has cv=pass"
    dup = listed.replace(b"ARC-Seal: i=1", b"ARC-Seal: i=1; a=rsa-sha256; b=; cv=none; d=x; s=y\r\nARC-Seal: i=1")
    assert arc(dup, dns).reason.startswith("ARC-Seal: duplicate tag") or "two arc-seal" in arc(dup, dns).reason


def test_our_seal_verifies_with_dkimpy_on_a_fresh_chain(dns, keys) -> None:
    plain = keys["author"].dkimpy_sign(MESSAGE) + MESSAGE
    chain = arc(plain, dns)
    assert chain.result == "none"
    sealed = seal(plain, keys["ours"].signing_key(), authserv_id="mx.forward.example",
                  results="dkim=pass header.d=acme.example", chain=chain) + plain
    assert sealed.startswith(b"ARC-Seal: i=1; a=rsa-sha256; t=")
    assert dkimpy_arc(sealed, dns) == b"pass"
    ours = arc(sealed, dns)
    assert (ours.result, ours.sealers) == ("pass", ("forward.example",))
    assert b"ARC-Authentication-Results: i=1; mx.forward.example;\r\n\tdkim=pass header.d=acme.example" in sealed


def test_our_seal_extends_a_list_chain_and_dkimpy_agrees(dns, keys) -> None:
    listed = through_list(keys)
    chain = arc(listed, dns)
    sealed = seal(listed, keys["ours"].signing_key(), authserv_id="mx.forward.example",
                  results="dkim=fail header.d=acme.example; arc=pass", chain=chain) + listed
    assert b"ARC-Seal: i=2; a=rsa-sha256" in sealed and b"cv=pass" in sealed.split(b"\r\n")[0]
    assert dkimpy_arc(sealed, dns) == b"pass"
    assert arc(sealed, dns).result == "pass"
    # an Ed25519 seal verifies here too (dkimpy's ARC is RSA only)
    ed = make_key("forward.example", "fwd-ed", "ed25519")
    publish(dns, ed)
    sealed_ed = seal(listed, ed.signing_key(), authserv_id="mx.forward.example", results="", chain=chain) + listed
    assert arc(sealed_ed, dns).result == "pass"


def test_a_failed_chain_is_sealed_as_failed(dns, keys) -> None:
    tampered = through_list(keys).replace(b"team mailing list", b"evil mailing list")
    chain = arc(tampered, dns)
    assert chain.result == "fail"
    sealed = seal(tampered, keys["ours"].signing_key(), authserv_id="mx.forward.example",
                  results="arc=fail", chain=chain) + tampered
    assert b"cv=fail" in sealed.split(b"\r\nARC-Message-Signature")[0]
    # dkimpy reports a chain whose newest seal says cv=fail as terminated (None); RFC 8617 says fail
    assert dkimpy_arc(sealed, dns) is None
    assert arc(sealed, dns) == ArcResult("fail", 2, "ARC-Seal i=2 says cv=fail", None,
                                         ("lists.example", "forward.example"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["ARC-Seal", "ARC-Message-Signature", "ARC-Authentication-Results"]),
                          st.binary(max_size=120)), min_size=1, max_size=4))
def test_any_arc_headers_give_a_verdict_never_an_exception(fields: list[tuple[str, bytes]]) -> None:
    head = b"".join(name.encode() + b": " + value.replace(b"\r", b"").replace(b"\n", b"") + b"\r\n"
                    for name, value in fields)
    result = asyncio.run(verify_arc(head + MESSAGE, refused_txt, keys=KeyCache()))
    assert result.result == "fail" and result.reason
