"""DKIM verification against a corpus signed in the test (dkimpy and our signer), keys on loopback DNS,
each verdict cross-checked with dkimpy's ``verify``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from dnslib import TXT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dovetail.mailauth.dkimverify import (
    DkimResult,
    KeyCache,
    SignatureError,
    TagError,
    parse_signature,
    parse_tags,
    verify_dkim,
)
from dovetail.mailauth.dnserrors import TxtRecords
from dovetail.outbound.dkim import sign

from ..outbound.dnsserver import LoopbackDNS
from .dkimcorpus import (
    MESSAGE,
    dkimpy_verdicts,
    failing_txt,
    loopback_txt,
    make_key,
    now,
    publish,
    refused_txt,
)


@pytest.fixture(scope="module")
def dns() -> Iterator[LoopbackDNS]:
    with LoopbackDNS() as server:
        yield server


@pytest.fixture(scope="module")
def keys(dns: LoopbackDNS) -> dict[str, object]:
    made = {
        "rsa": make_key("acme.example", "s2048"),
        "ed": make_key("acme.example", "sed", "ed25519"),
        "other": make_key("esp.example", "esp"),
        "short": make_key("acme.example", "s512", "rsa512"),
    }
    publish(dns, *made.values())
    return made


def verify(message: bytes, dns: LoopbackDNS) -> list[DkimResult]:
    return asyncio.run(verify_dkim(message, loopback_txt(dns), keys=KeyCache()))


def check(message: bytes, dns: LoopbackDNS) -> list[DkimResult]:
    """Our verdicts, asserted to agree with dkimpy's (pass ⇔ dkimpy True)."""
    ours = verify(message, dns)
    theirs = dkimpy_verdicts(message, dns)
    assert [r.result == "pass" for r in ours] == theirs, (ours, theirs)
    return ours


def test_our_own_signer_rsa_and_ed25519_pass(dns, keys) -> None:
    signed = sign(MESSAGE, [keys["rsa"].signing_key(), keys["ed"].signing_key()]) + MESSAGE
    results = check(signed, dns)
    assert [(r.result, r.algorithm, r.selector, r.key_bits) for r in results] == [
        ("pass", "rsa-sha256", "s2048", 2048), ("pass", "ed25519-sha256", "sed", 256)]
    assert all(r.domain == "acme.example" and not r.body_length_limited for r in results)
    assert results[0].identity == "@acme.example" and results[0].header_b


@pytest.mark.parametrize("canon", [(b"simple", b"simple"), (b"relaxed", b"simple"), (b"simple", b"relaxed"),
                                   (b"relaxed", b"relaxed")])
def test_dkimpy_signatures_pass_in_every_canonicalization(dns, keys, canon) -> None:
    signed = keys["rsa"].dkimpy_sign(MESSAGE, canonicalize=canon) + MESSAGE
    assert [r.result for r in check(signed, dns)] == ["pass"]


def test_dkimpy_ed25519_passes(dns, keys) -> None:
    signed = keys["ed"].dkimpy_sign(MESSAGE) + MESSAGE
    [result] = check(signed, dns)
    assert (result.result, result.algorithm) == ("pass", "ed25519-sha256")


def test_unaligned_signature_passes_for_its_own_domain(dns, keys) -> None:
    # DKIM says who signed; whether that is the From domain is DMARC's question.
    signed = keys["other"].dkimpy_sign(MESSAGE) + MESSAGE
    [result] = check(signed, dns)
    assert (result.result, result.domain) == ("pass", "esp.example")


def test_broken_body_hash_fails(dns, keys) -> None:
    signed = keys["rsa"].dkimpy_sign(MESSAGE) + MESSAGE
    [result] = check(signed.replace(b"numbers are", b"numbers were"), dns)
    assert (result.result, result.reason) == ("fail", "body hash did not verify")


def test_changed_header_fails(dns, keys) -> None:
    signed = sign(MESSAGE, [keys["rsa"].signing_key()]) + MESSAGE
    [result] = check(signed.replace(b"Quarterly", b"Urgent"), dns)
    assert (result.result, result.reason) == ("fail", "signature did not verify")


def test_body_length_limit_with_appended_content_passes_but_is_flagged(dns, keys) -> None:
    signed = keys["rsa"].dkimpy_sign(MESSAGE, length=True) + MESSAGE
    [plain] = check(signed, dns)
    assert plain.result == "pass" and plain.body_length_limited and "covers the whole body" in plain.reason
    appended = signed + b"Click here: http://phish.example/\r\n"
    [result] = check(appended, dns)
    assert result.result == "pass" and result.body_length_limited
    # the 35 appended octets, and the two empty lines before them that the signed body had dropped
    assert "39 body octets unsigned" in result.reason


def test_body_shorter_than_l_fails(dns, keys) -> None:
    signed = keys["rsa"].dkimpy_sign(MESSAGE, length=True) + MESSAGE
    [result] = check(signed.replace(b"the numbers are   attached.\t\r\n", b""), dns)
    assert (result.result, result.reason) == ("fail", "body is shorter than l=")


def test_rsa_sha1_is_reported_as_such_never_as_pass(dns, keys) -> None:
    signed = keys["rsa"].dkimpy_sign(MESSAGE, signature_algorithm=b"rsa-sha1") + MESSAGE
    [result] = verify(signed, dns)
    assert dkimpy_verdicts(signed, dns) == [True]  # dkimpy still accepts it; RFC 8301 §3.1 does not
    assert (result.result, result.algorithm) == ("policy", "rsa-sha1")
    assert "RFC 8301" in result.reason
    [broken] = verify(signed.replace(b"numbers are", b"numbers were"), dns)
    assert (broken.result, broken.algorithm) == ("fail", "rsa-sha1")


def test_512_bit_key_is_a_permerror(dns, keys) -> None:
    signed = keys["short"].dkimpy_sign(MESSAGE) + MESSAGE
    [result] = check(signed, dns)
    assert (result.result, result.key_bits) == ("permerror", 512)
    assert "too short" in result.reason


@pytest.mark.parametrize(("edit", "reason"), [
    (lambda s: s.replace(b"v=1;", b"v=1; v=1;", 1), "duplicate tag 'v'"),
    (lambda s: s.replace(b"bh=", b"xbh=", 1), "missing tag bh="),
    (lambda s: s.replace(b"a=rsa-sha256", b"a=rsa-md5", 1), "unknown algorithm a=rsa-md5"),
    (lambda s: s.replace(b"v=1", b"v=2", 1), "unknown version v=2"),
    (lambda s: s.replace(b"d=acme.example", b"d acme.example", 1), "tag 'd acme.example' has no '='"),
    (lambda s: s.replace(b"c=relaxed/relaxed", b"c=weird/relaxed", 1), "unknown canonicalization c=weird/relaxed"),
    (lambda s: s.replace(b"bh=", b"bh=\xc3\xa9", 1), "bad value for tag 'bh'"),
    (lambda s: s.replace(b"bh=", b"bh=!!", 1), "b= or bh= is not base64"),
    (lambda s: s.replace(b"h=from:from:", b"h=", 1), "h= does not sign From"),
    (lambda s: s.replace(b"s=s2048;", b"s=s2048; i=alice@evil.example;", 1), "i= is not within d="),
])
def test_malformed_tags_are_permerrors_with_a_reason(dns, keys, edit, reason) -> None:
    signed = sign(MESSAGE, [keys["rsa"].signing_key()]) + MESSAGE
    broken = edit(signed)
    assert broken != signed
    [result] = check(broken, dns)
    assert (result.result, result.reason) == ("permerror", reason)


def test_expired_and_future_signatures_are_permerrors(dns, keys) -> None:
    # dkimpy allows 10 hours of clock slop either way: a day is past any such leeway
    expired = sign(MESSAGE, [keys["rsa"].signing_key()], timestamp=now() - 2 * 86400, expire_after=86400) + MESSAGE
    [result] = check(expired, dns)
    assert (result.result, result.reason) == ("permerror", "signature expired (x=)")
    future = sign(MESSAGE, [keys["rsa"].signing_key()], timestamp=now() + 86400) + MESSAGE
    [result] = check(future, dns)
    assert (result.result, result.reason) == ("permerror", "signature timestamp t= in the future")
    valid = sign(MESSAGE, [keys["rsa"].signing_key()], timestamp=now() - 60, expire_after=3600) + MESSAGE
    assert [r.result for r in check(valid, dns)] == ["pass"]


def test_txt_record_split_oddly_still_verifies(dns) -> None:
    key = make_key("split.example", "odd")
    # split inside "v=DKIM1", inside "k=rsa", and in the middle of the base64
    chunks = [key.txt[:3], key.txt[3:11], key.txt[11:12], key.txt[12:200], key.txt[200:]]
    assert "".join(chunks) == key.txt and len(chunks[-1]) < 255
    dns._add(key.name, "TXT", TXT([c.encode() for c in chunks]))
    signed = key.dkimpy_sign(MESSAGE) + MESSAGE
    assert [r.result for r in check(signed, dns)] == ["pass"]


def test_missing_and_revoked_keys_are_permerrors(dns, keys) -> None:
    nokey = make_key("nowhere.example", "gone")
    signed = nokey.dkimpy_sign(MESSAGE) + MESSAGE
    [result] = check(signed, dns)
    assert (result.result, result.reason) == ("permerror", "no key record at gone._domainkey.nowhere.example")
    revoked = make_key("revoked.example", "old")
    dns.txt(revoked.name, "v=DKIM1; k=rsa; p=")
    [result] = check(revoked.dkimpy_sign(MESSAGE) + MESSAGE, dns)
    assert (result.result, result.reason) == ("permerror", "key revoked (empty p=)")


def test_key_type_must_match_the_algorithm(dns, keys) -> None:
    rsa_key = make_key("mixed.example", "k1")
    dns.txt(rsa_key.name, keys["ed"].txt)  # an Ed25519 record where an RSA signature points
    [result] = check(rsa_key.dkimpy_sign(MESSAGE) + MESSAGE, dns)
    assert (result.result, result.reason) == ("permerror", "key type ed25519 does not match a=rsa-sha256")


def test_dns_trouble_is_temperror_or_permerror_never_an_exception(keys) -> None:
    signed = sign(MESSAGE, [keys["rsa"].signing_key()]) + MESSAGE
    [temp] = asyncio.run(verify_dkim(signed, failing_txt, keys=KeyCache()))
    assert temp.result == "temperror" and "timed out" in temp.reason
    [perm] = asyncio.run(verify_dkim(signed, refused_txt, keys=KeyCache()))
    assert perm.result == "permerror" and "size limit" in perm.reason


def test_unsigned_and_malformed_messages(dns) -> None:
    assert verify(MESSAGE, dns) == []
    [bad] = verify(b"DKIM-Signature: v=1\r\nthis is no header\r\n\r\nbody\r\n", dns)
    assert (bad.result, bad.reason) == ("permerror", "malformed header section")


def test_keys_are_cached_for_the_ttl_of_the_record(keys) -> None:
    asked: list[str] = []

    async def txt(name: str) -> list[str]:
        asked.append(name)
        return TxtRecords([keys["rsa"].txt], ttl=300)

    cache = KeyCache()
    signed = sign(MESSAGE, [keys["rsa"].signing_key()]) + MESSAGE
    for _ in range(3):
        assert [r.result for r in asyncio.run(verify_dkim(signed, txt, keys=cache))] == ["pass"]
    assert asked == ["s2048._domainkey.acme.example"] and cache.lookups == 1


def test_many_signatures_are_bounded(keys) -> None:
    one = sign(MESSAGE, [keys["rsa"].signing_key()])
    results = asyncio.run(verify_dkim(one * 12 + MESSAGE, refused_txt, keys=KeyCache()))
    assert len(results) == 12
    assert [r.reason for r in results[10:]] == ["not checked: over 10 signatures"] * 2


# --- the tag parser, fuzzed ------------------------------------------------------------------------

_names = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,6}", fullmatch=True)
_values = st.from_regex(r"[\x21-\x3a\x3c-\x7e]{1,8}( [\x21-\x3a\x3c-\x7e]{1,8}){0,2}", fullmatch=True)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_names, _values, max_size=8), st.sampled_from(["", " ", "\r\n\t"]), st.booleans())
def test_tag_lists_round_trip(tags: dict[str, str], fws: str, trailing: bool) -> None:
    text = ";".join(f"{fws}{k}{fws}={fws}{v}{fws}" for k, v in tags.items()) + (";" if trailing and tags else "")
    assert parse_tags(text) == tags


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200))
def test_tag_parser_raises_only_tag_errors(text: str) -> None:
    try:
        parse_tags(text)
    except TagError:
        pass
    try:
        parse_signature(text)
    except SignatureError:
        pass


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_any_signature_field_gives_a_result_never_an_exception(value: bytes) -> None:
    value = value.replace(b"\r", b"").replace(b"\n", b"")
    message = b"DKIM-Signature: " + value + b"\r\n" + MESSAGE
    results = asyncio.run(verify_dkim(message, refused_txt, keys=KeyCache()))
    assert len(results) <= 1
    assert all(r.result in ("permerror", "fail") for r in results)
