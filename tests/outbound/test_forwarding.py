"""Forwarded mail before it leaves: SRS sender, ARC seal built on our Authentication-Results, key trouble."""

from __future__ import annotations

import asyncio

import dkim
import pytest

from dovetail.directory.srs import Srs
from dovetail.mailauth.arc import verify_arc
from dovetail.mailauth.dkimverify import KeyCache
from dovetail.mailauth.dnserrors import dnspython_txt
from dovetail.outbound.forwarding import Forwarder, our_results
from dovetail.outbound.keys import DkimKeys, DkimKeyUnavailable

from ..mailauth.dkimcorpus import MESSAGE, make_key, publish

AUTHSERV = "mx.acme.example"


@pytest.fixture
def keys(world, dns_server) -> DkimKeys:  # noqa: ANN001
    store = DkimKeys(world.engine, world.dkim_dir)
    for key in store.ensure("acme.example"):
        dns_server.txt(key.record_name, key.txt)
    return store


def listed_message(dns_server) -> bytes:  # noqa: ANN001
    """A list's message with a valid ARC chain (dkimpy) and our intake's Authentication-Results on top."""
    author, lists = make_key("ext.example", "a1"), make_key("lists.example", "arc")
    publish(dns_server, author, lists)
    signed = author.dkimpy_sign(MESSAGE) + MESSAGE
    changed = signed.replace(b"Subject:   Quarterly", b"Subject: [team] Quarterly") + b"-- \r\nteam list\r\n"
    with_ar = b"Authentication-Results: lists.example; dkim=pass header.d=ext.example; arc=none\r\n" + changed
    arc_set = dkim.arc_sign(with_ar, b"arc", b"lists.example", lists.pem, b"lists.example")
    chained = b"".join(arc_set) + changed
    ours = (f"Authentication-Results: {AUTHSERV}; dkim=fail header.d=ext.example;\r\n"
            f"\tarc=pass header.oldest-pass=0\r\n").encode()
    return ours + chained


def test_our_results_are_found_by_authserv_id() -> None:
    data = (b"Authentication-Results: other.example; dkim=pass\r\n"
            b"Authentication-Results: MX.acme.example 1; spf=pass smtp.mailfrom=x.example;\r\n dkim=none\r\n\r\nx")
    assert our_results(data, AUTHSERV) == "spf=pass smtp.mailfrom=x.example; dkim=none"
    assert our_results(b"Subject: x\r\n\r\n", AUTHSERV) is None


def test_forwarded_message_gets_srs_and_a_seal_that_extends_the_chain(keys, dns_server) -> None:  # noqa: ANN001
    data = listed_message(dns_server)
    fwd = Forwarder(srs=Srs(b"k" * 32), keys=keys, authserv_id=AUTHSERV)
    out = asyncio.run(fwd.prepare("Q1", "alice@ext.example", data, "acme.example"))
    assert out.sender.startswith("SRS0=") and out.sender.endswith("=ext.example=alice@acme.example")
    assert out.sealed_by == "acme.example"
    first = out.data.split(b"\r\n", 1)[0]
    assert first.startswith(b"ARC-Seal: i=2; a=rsa-sha256;") and b"cv=pass" in first
    assert b"ARC-Authentication-Results: i=2; mx.acme.example;\r\n\tdkim=fail header.d=ext.example; arc=pass" \
        in out.data
    cv, _, reason = dkim.arc_verify(out.data, dnsfunc=dns_server.dkimpy_dnsfunc())
    assert cv == b"pass", reason
    chain = asyncio.run(verify_arc(out.data, dnspython_txt(dns_server.async_resolver()), keys=KeyCache()))
    assert (chain.result, chain.sealers) == ("pass", ("lists.example", "acme.example"))


def test_without_our_results_the_chain_is_verified_here(keys, dns_server) -> None:  # noqa: ANN001
    data = listed_message(dns_server).split(b"\r\n", 2)[2]  # our two A-R lines removed
    assert our_results(data, AUTHSERV) is None
    fwd = Forwarder(srs=None, keys=keys, authserv_id=AUTHSERV, txt=dnspython_txt(dns_server.async_resolver()))
    out = asyncio.run(fwd.prepare("Q1", "alice@ext.example", data, "acme.example"))
    assert out.sender == "alice@ext.example"  # SRS off
    assert b"cv=pass" in out.data.split(b"\r\n", 1)[0]
    assert (b"ARC-Authentication-Results: i=2; mx.acme.example;\r\n"
            b"\tarc=pass (i=1 sealed by lists.example) header.oldest-pass=0") in out.data
    assert dkim.arc_verify(out.data, dnsfunc=dns_server.dkimpy_dnsfunc())[0] == b"pass"


def test_no_key_no_seal_and_an_unreadable_key_is_an_error(keys, world) -> None:  # noqa: ANN001
    fwd = Forwarder(srs=None, keys=keys, authserv_id=AUTHSERV)
    plain = asyncio.run(fwd.prepare("Q1", "a@ext.example", MESSAGE, "globex.example"))  # no keys for globex
    assert (plain.data, plain.sealed_by) == (MESSAGE, None)
    for path in (world.dkim_dir / "acme.example").iterdir():
        path.write_bytes(b"not a key")
    keys.invalidate()
    with pytest.raises(DkimKeyUnavailable):
        asyncio.run(fwd.prepare("Q1", "a@ext.example", MESSAGE, "acme.example"))
