"""DKIM signing checked by dkimpy against keys published on a loopback DNS server."""

from __future__ import annotations

import os
import stat
import time

import dkim
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dovetail.outbound.dkim import DkimError, relaxed_body, relaxed_header, sign
from dovetail.outbound.keys import DkimKeyError, DkimKeys

MESSAGE = (b"From: Alice <alice@acme.example>\r\n"
           b"To: bob@example.org\r\n"
           b"Subject:   Hello    there\r\n"
           b"\tfolded  part\r\n"
           b"Date: Sat, 28 Nov 2026 10:00:00 +0000\r\n"
           b"Message-ID: <m1@acme.example>\r\n"
           b"\r\n"
           b"Hi Bob,  \r\n"
           b"\r\n"
           b"trailing   spaces\t\r\n"
           b"\r\n\r\n")


def publish(dns_server, keys) -> None:  # noqa: ANN001
    for k in keys:
        dns_server.txt(k.record_name, k.txt)


def verify_all(message: bytes, dns_server) -> list[bool]:  # noqa: ANN001
    n = message.count(b"DKIM-Signature:")
    out = []
    for i in range(n):
        try:
            out.append(bool(dkim.DKIM(message).verify(idx=i, dnsfunc=dns_server.dkimpy_dnsfunc())))
        except dkim.DKIMException:
            out.append(False)
    return out


def test_rsa_and_ed25519_signatures_verify_with_dkimpy(world, dns_server) -> None:
    store = DkimKeys(world.engine, world.dkim_dir)
    made = store.ensure("acme.example")
    assert sorted(k.algorithm for k in made) == ["ed25519-sha256", "rsa-sha256"]
    publish(dns_server, made)
    keys = store.signing_keys("acme.example")
    signed = sign(MESSAGE, keys) + MESSAGE
    assert signed.count(b"DKIM-Signature:") == 2
    assert verify_all(signed, dns_server) == [True, True]
    # a changed body breaks both
    tampered = signed.replace(b"Hi Bob", b"Hi Eve")
    assert verify_all(tampered, dns_server) == [False, False]
    # an added From: breaks them too (From is oversigned)
    added = signed.replace(b"From: Alice", b"From: Mallory <m@evil.example>\r\nFrom: Alice", 1)
    assert verify_all(added, dns_server) == [False, False]


def test_bare_lf_message_signs_for_the_crlf_wire_form(world, dns_server) -> None:
    store = DkimKeys(world.engine, world.dkim_dir)
    publish(dns_server, store.ensure("acme.example"))
    lf = MESSAGE.replace(b"\r\n", b"\n")
    header = sign(lf, store.signing_keys("acme.example"))
    assert verify_all(header + MESSAGE, dns_server) == [True, True]


def test_unpublished_key_fails_verification(world, dns_server) -> None:
    store = DkimKeys(world.engine, world.dkim_dir)
    store.ensure("acme.example")
    signed = sign(MESSAGE, store.signing_keys("acme.example")) + MESSAGE
    assert verify_all(signed, dns_server) == [False, False]


def test_key_files_are_private_and_rows_hold_public_part(world) -> None:
    store = DkimKeys(world.engine, world.dkim_dir)
    made = store.ensure("acme.example")
    for k in made:
        path = store.key_path("acme.example", k.selector)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert b"PRIVATE KEY" in path.read_bytes()
        assert k.txt.startswith("v=DKIM1; k=")
    assert stat.S_IMODE(os.stat(world.dkim_dir / "acme.example").st_mode) == 0o700
    assert store.ensure("acme.example") == []  # already has active keys


def test_rotation_publishes_before_signing_and_retires_later(world, dns_server) -> None:
    store = DkimKeys(world.engine, world.dkim_dir, cache_ttl=0)
    first = store.ensure("acme.example")
    publish(dns_server, first)
    new = store.rotate("acme.example")
    assert {k.state for k in new} == {"published"}
    # still signing with the first pair
    assert {k.selector for k in store.signing_keys("acme.example")} == {k.selector for k in first}
    with pytest.raises(DkimKeyError, match="already has published keys"):
        store.rotate("acme.example")
    publish(dns_server, new)
    store.activate("acme.example")
    assert {k.selector for k in store.signing_keys("acme.example")} == {k.selector for k in new}
    states = {k.selector: k.state for k in store.list("acme.example")}
    assert all(states[k.selector] == "retiring" for k in first)
    signed = sign(MESSAGE, store.signing_keys("acme.example")) + MESSAGE
    assert verify_all(signed, dns_server) == [True, True]
    gone = store.retire("acme.example")
    assert {k.selector for k in gone} == {k.selector for k in first}
    assert not any(store.key_path("acme.example", k.selector).exists() for k in first)
    assert {k.state for k in store.list("acme.example")} == {"active"}
    with pytest.raises(DkimKeyError, match="no published keys"):
        store.activate("acme.example")


def test_unknown_domain_refused(world) -> None:
    store = DkimKeys(world.engine, world.dkim_dir)
    with pytest.raises(DkimKeyError, match="not one of our domains"):
        store.rotate("nowhere.example")
    with pytest.raises(DkimKeyError):
        store.rotate("../../etc")
    assert store.signing_keys("nowhere.example") == []


def test_message_without_from_is_refused() -> None:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from dovetail.outbound.dkim import SigningKey

    key = SigningKey("acme.example", "s", "ed25519-sha256", ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(DkimError):
        sign(b"Subject: x\r\n\r\nbody\r\n", [key])
    with pytest.raises(DkimError):
        sign(b"no colon here\r\n\r\nbody\r\n", [key])


_text = st.binary(max_size=300).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"\r\n"))


@settings(max_examples=150, deadline=None)
@given(_text)
def test_relaxed_body_matches_dkimpy(body: bytes) -> None:
    from dkim.canonicalization import Relaxed

    wire = body if not body or body.endswith(b"\r\n") else body + b"\r\n"
    assert relaxed_body(body) == Relaxed.canonicalize_body(wire)


@settings(max_examples=150, deadline=None)
@given(st.from_regex(rb"[A-Za-z-]{1,10}", fullmatch=True),
       st.lists(st.from_regex(rb"[ \t!-~]{0,30}", fullmatch=True), min_size=1, max_size=3))
def test_relaxed_header_matches_dkimpy(name: bytes, lines: list[bytes]) -> None:
    from dkim.canonicalization import Relaxed

    value = b"\r\n ".join(lines)
    expected = Relaxed.canonicalize_headers([(name, value + b"\r\n")])[0]
    assert relaxed_header(name + b":" + value) + b"\r\n" == expected[0] + b":" + expected[1]


def test_signing_speed(world) -> None:
    """Signing throughput with both keys (printed; the floor is far below what OpenSSL manages)."""
    store = DkimKeys(world.engine, world.dkim_dir)
    store.ensure("acme.example")
    keys = store.signing_keys("acme.example")
    body = MESSAGE + b"x" * 2000 + b"\r\n"
    n = 200
    start = time.perf_counter()
    for _ in range(n):
        sign(body, keys)
    rate = n / (time.perf_counter() - start)
    print(f"\nDKIM: {rate:.0f} messages/s signed with RSA-2048 + Ed25519")
    assert rate > 150


def test_key_changes_made_elsewhere_apply_at_the_next_check(world) -> None:
    """A rotate + activate by another process (the CLI, the web admin: another store on the same database)
    reaches a signer within its check interval, not after its 30 s cache."""
    clock = [1000.0]
    signer = DkimKeys(world.engine, world.dkim_dir, check_interval=1.0, clock=lambda: clock[0])
    admin = DkimKeys(world.engine, world.dkim_dir)
    admin.ensure("acme.example")
    before = {k.selector for k in signer.signing_keys("acme.example")}
    admin.rotate("acme.example")
    admin.activate("acme.example")
    clock[0] += 0.5  # within the check interval: the cached keys still sign
    assert {k.selector for k in signer.signing_keys("acme.example")} == before
    clock[0] += 1.0  # the next check sees the generation moved
    after = {k.selector for k in signer.signing_keys("acme.example")}
    assert after and after.isdisjoint(before)
    assert after == {k.selector for k in admin.list("acme.example") if k.state == "active"}
