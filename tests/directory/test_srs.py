"""SRS addresses: made and reversed under the installation's secret; forged and expired ones refused;
bounces to them resolved back to the original sender by the recipient resolver."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dovetail.db import make_engine, migrate
from dovetail.directory import Directory, Resolver
from dovetail.directory.srs import Srs, SrsError, is_srs

SECRET = b"0123456789abcdef0123456789abcdef"
DAY = 86400


def test_srs0_format_is_pysrs_and_libsrs2s() -> None:
    now = 1_796_500_000.0
    srs = Srs(SECRET)
    address = srs.forward("alice@gmail.example", "acme.example", now=now)
    # computed independently: HMAC-SHA1 over the lowercased parts, base64, 4 characters; base32 day stamp
    days = int(now // DAY)
    stamp = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"[(days >> 5) & 31] + "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"[days & 31]
    mac = hmac.new(SECRET, (stamp.lower() + "gmail.example" + "alice").encode(), hashlib.sha1).digest()
    assert address == f"SRS0={base64.b64encode(mac).decode()[:4]}={stamp}=gmail.example=alice@acme.example"
    assert srs.reverse(address.partition("@")[0], now=now) == "alice@gmail.example"


def test_forward_keeps_null_and_own_senders() -> None:
    srs = Srs(SECRET)
    assert srs.forward("", "acme.example") == ""
    assert srs.forward("bob@acme.example", "acme.example") == "bob@acme.example"
    assert srs.forward("bob@Acme.Example", "acme.example") == "bob@Acme.Example"


def test_a_second_forwarder_makes_srs1_and_it_unwraps_to_the_first() -> None:
    first, second = Srs(b"first-secret"), Srs(b"second-secret")
    srs0 = first.forward("alice@gmail.example", "lists.example")
    srs1 = second.forward(srs0, "acme.example")
    assert srs1.startswith("SRS1=") and srs1.endswith("@acme.example")
    assert "=lists.example==" in srs1  # the first forwarder's host, then its opaque part
    back = second.reverse(srs1.partition("@")[0])
    assert back == srs0.replace("SRS0=", "SRS0=", 1) and back.endswith("@lists.example")
    assert first.reverse(back.partition("@")[0]) == "alice@gmail.example"
    # a third hop stays SRS1 of the same length class: no growth per hop
    srs1b = Srs(b"third").forward(srs1, "globex.example")
    assert srs1b.startswith("SRS1=") and len(srs1b) - len("globex.example") == len(srs1) - len("acme.example")


def test_forged_expired_and_malformed_addresses_are_refused() -> None:
    srs = Srs(SECRET, max_age_days=21)
    now = time.time()
    good = srs.forward("alice@gmail.example", "acme.example", now=now).partition("@")[0]
    forged = good.replace("=gmail.example=alice", "=gmail.example=mallory")
    with pytest.raises(SrsError, match="forged"):
        srs.reverse(forged, now=now)
    with pytest.raises(SrsError, match="forged"):
        Srs(b"another installation").reverse(good, now=now)
    with pytest.raises(SrsError, match="expired"):
        srs.reverse(good, now=now + 22 * DAY)
    assert srs.reverse(good, now=now + 21 * DAY) == "alice@gmail.example"
    for bad in ("SRS0=abc", "SRS0==", "SRS1=x=y", "bob"):
        with pytest.raises(SrsError):
            srs.reverse(bad, now=now)
    # receivers may smash case (RFC 5321 says they should not): still ours
    assert srs.reverse(good.lower(), now=now) == "alice@gmail.example"
    assert is_srs(good.lower()) and is_srs("SRS1+x") and not is_srs("srs0") and not is_srs("bob")


@settings(max_examples=200, deadline=None)
@given(st.from_regex(r"[a-zA-Z0-9._+=-]{1,40}", fullmatch=True),
       st.from_regex(r"[a-z0-9-]{1,20}\.[a-z]{2,6}", fullmatch=True))
def test_round_trip(local: str, host: str) -> None:
    srs = Srs(SECRET)
    address = srs.forward(f"{local}@{host}", "acme.example")
    if is_srs(local):
        return
    assert srs.reverse(address.rpartition("@")[0]) == f"{local}@{host}"


@pytest.fixture
def resolver(database_url: str, tmp_path: Path) -> Resolver:
    engine = make_engine(database_url)
    migrate(engine)
    d = Directory(engine)
    d.tenant_add("acme")
    d.domain_add("acme.example", "acme")
    d.domain_add("globex.example", "acme")
    d.mailbox_add("bob@globex.example", None)
    return Resolver(d, tmp_path / "mail", check_interval=0, srs=Srs(SECRET))


def test_a_bounce_to_an_srs_address_resolves_to_the_original_sender(resolver: Resolver) -> None:
    srs = resolver.srs
    assert srs is not None
    address = srs.forward("alice@gmail.example", "acme.example")
    res = resolver.resolve(address)
    assert (res.status, res.external, res.mailboxes) == ("ok", ["alice@gmail.example"], [])
    assert "SRS address of alice@gmail.example" in res.steps[0]
    # longer than RFC 5321's 64 octets for a local part, as SRS addresses often are
    long = srs.forward("newsletter-bounces-weekly@mail.a-rather-long-company-name.example", "acme.example")
    assert len(long.partition("@")[0]) > 64
    assert resolver.resolve(long).external == ["newsletter-bounces-weekly@mail.a-rather-long-company-name.example"]
    # a sender of one of our own domains comes back to its mailbox
    local = resolver.resolve(srs.forward("bob@globex.example", "acme.example"))
    assert local.ok and [m.address for m in local.mailboxes] == ["bob@globex.example"]


def test_forged_srs_addresses_are_refused_and_foreign_ones_are_not_ours(resolver: Resolver) -> None:
    srs = resolver.srs
    assert srs is not None
    address = srs.forward("alice@gmail.example", "acme.example")
    forged = address.replace("=alice@", "=mallory@")
    res = resolver.resolve(forged)
    assert (res.status, res.external) == ("refused", [])
    assert res.reason == "invalid SRS address: SRS hash does not match (forged address)"
    assert resolver.resolve(address.replace("@acme.example", "@elsewhere.example")).status == "not_local"
    # without a secret no SRS address routes anywhere (nothing is relayed on an unverifiable hash)
    plain = Resolver(resolver.directory, resolver.mail_root, check_interval=0)
    assert plain.resolve(address).status == "unknown"
