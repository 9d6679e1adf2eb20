"""lmtp transport rules: what they accept, and which recipients they take from local delivery."""

from __future__ import annotations

import asyncio

import pytest

from dovetail.intake.local import transport_chooser
from dovetail.master.runners import lmtp_nexthop
from dovetail.outbound.transports import TransportError, Transports, parse_lmtp_nexthop

from .conftest import Node


@pytest.mark.parametrize(("text", "parsed"), [
    ("lmtp:10.1.0.12:24", ("10.1.0.12", 24)),
    ("lmtp:inet:10.1.0.12:2424", ("10.1.0.12", 2424)),
    ("mbox1.internal", ("mbox1.internal", 24)),
    ("lmtp:[::1]:24", ("::1", 24)),
    ("lmtp:unix:/run/dovetail/lmtp", ("/run/dovetail/lmtp", None)),
])
def test_nexthops_as_operators_write_them(text: str, parsed: tuple[str, int | None]) -> None:
    assert parse_lmtp_nexthop(text) == parsed


@pytest.mark.parametrize("text", ["lmtp:unix:relative/path", "lmtp:host:0", "lmtp:", "lmtp:[::1"])
def test_malformed_nexthops_are_refused(text: str) -> None:
    with pytest.raises(TransportError):
        parse_lmtp_nexthop(text)


def test_rules_and_their_precedence(node: Node) -> None:
    t = Transports(node.directory.engine, check_interval=0)
    # one of our own domains may be sent to its mailbox node; other kinds of rule may not name it
    domain = t.set_lmtp("recipient", "acme.example", "lmtp:127.0.0.1:2424", dns_check=False)
    assert domain.name == "lmtp:127.0.0.1:2424"
    with pytest.raises(TransportError, match="one of our domains"):
        t.set_nexthop("recipient", "acme.example", "relay.example:25", dns_check=False)
    single = t.set_lmtp("recipient", "carol@acme.example", "lmtp:unix:/run/dovetail/lmtp.sock")
    assert single.name == "lmtp:unix:/run/dovetail/lmtp.sock"
    for scope, match in (("sender", "bob@acme.example"), ("tenant", "acme"), ("default", "*")):
        with pytest.raises(TransportError, match="for recipients"):
            t.set_lmtp(scope, match, "lmtp:127.0.0.1:24")
    with pytest.raises(TransportError, match="only be an lmtp rule"):
        t.set_nexthop("recipient", "x@partner.example", "relay.example:25", dns_check=False)
    t.set_lmtp("recipient", ".partner.example", "lmtp:127.0.0.1:2525", dns_check=False)
    t.set_nexthop("recipient", "eu.partner.example", "relay.example:25", dns_check=False)

    assert t.lmtp_for("carol@acme.example") == single  # the address before its domain
    assert t.lmtp_for("Bob@ACME.example") == domain
    assert t.lmtp_for("x@mx.partner.example").port == 2525  # a parent domain's rule
    assert t.lmtp_for("x@eu.partner.example") is None  # a more specific relay rule decides
    assert t.lmtp_for("x@other.example") is None
    assert t.lmtp_for("not an address") is None
    nexthop = lmtp_nexthop(t)
    assert str(nexthop("carol@acme.example")) == "lmtp:unix:/run/dovetail/lmtp.sock"
    assert str(nexthop("bob@acme.example")) == "lmtp:127.0.0.1:2424"

    choose = transport_chooser(node.resolver, t.lmtp_for)
    assert asyncio.run(choose("bob@acme.example")) == "lmtp"
    t.remove("recipient", "acme.example")
    assert asyncio.run(choose("bob@acme.example")) == "virtual"
    assert asyncio.run(choose("x@other.example")) == "smtp"
    assert asyncio.run(choose("x@mx.partner.example")) == "lmtp"
    assert t.explain("alice@ext.example", "carol@acme.example")["transport"] == "lmtp:unix:/run/dovetail/lmtp.sock"
