"""Transport routing: the precedence table on its own, then the store over a real database."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from dovetail.outbound.routing import candidates, choose, describe
from dovetail.outbound.schema import transports as transport_table
from dovetail.outbound.transports import TransportError, Transports, parse_nexthop, rule_key

# --- the precedence table, pure ---------------------------------------------------------------

SENDER, RCPT_DOMAIN, TENANT = "ceo@acme.example", "mx.eu.partner.example", "acme"

# Every rule that can match mail from SENDER (of TENANT) to someone@RCPT_DOMAIN, in the documented order.
ORDER = [
    ("recipient", "mx.eu.partner.example"),
    ("recipient", ".eu.partner.example"),
    ("recipient", ".partner.example"),
    ("sender", "ceo@acme.example"),
    ("domain", "acme.example"),
    ("tenant", "acme"),
    ("default", "*"),
]


def test_the_documented_order_rule_by_rule() -> None:
    table = set(ORDER)
    for expected in ORDER:
        assert choose(table, SENDER, RCPT_DOMAIN, TENANT) == expected
        table.discard(expected)
    assert choose(table, SENDER, RCPT_DOMAIN, TENANT) is None  # no rule: straight to MX
    assert list(candidates(SENDER, RCPT_DOMAIN, TENANT)) == ORDER


def test_a_wildcard_is_for_subdomains_only_and_never_a_bare_tld() -> None:
    assert choose({("recipient", ".partner.example")}, "", "partner.example", None) is None
    assert choose({("recipient", ".partner.example")}, "", "a.b.c.partner.example", None) == \
        ("recipient", ".partner.example")
    assert ("recipient", ".example") not in set(candidates("", "partner.example", None))
    assert choose({("recipient", "partner.example")}, "", "sub.partner.example", None) is None


def test_null_sender_and_sender_side_questions() -> None:
    table = {("sender", "ceo@acme.example"), ("domain", "acme.example"), ("default", "*")}
    assert choose(table, "", "partner.example", None) == ("default", "*")  # bounces: no sender rules
    assert choose(table, "ceo@acme.example", "", None) == ("sender", "ceo@acme.example")
    assert describe("recipient", ".x.example") == "recipient subdomains"
    assert describe("recipient", "x.example") == "recipient domain"
    assert describe("domain", "acme.example") == "sender domain"


labels = st.from_regex(r"[a-z][a-z0-9]{0,5}", fullmatch=True)
domains = st.lists(labels, min_size=2, max_size=5).map(".".join)


@st.composite
def situations(draw):  # noqa: ANN001, ANN201
    """A message (sender, recipient domain, tenant) and a table of rules, some matching, some not."""
    rcpt = draw(domains)
    sender_domain = draw(domains)
    sender = f"{draw(labels)}@{sender_domain}"
    tenant = draw(st.one_of(st.none(), labels))
    matching = list(candidates(sender, rcpt, tenant))
    others = [("recipient", draw(domains)), ("recipient", "." + draw(domains)), ("sender", f"x@{draw(domains)}"),
              ("domain", draw(domains)), ("tenant", draw(labels))]
    table = set(draw(st.lists(st.sampled_from(matching + others), max_size=12)))
    return sender, rcpt, tenant, table


@settings(max_examples=300, deadline=None)
@given(situations())
def test_the_most_specific_matching_rule_wins(case) -> None:  # noqa: ANN001
    sender, rcpt, tenant, table = case
    chosen = choose(table, sender, rcpt, tenant)
    order = list(candidates(sender, rcpt, tenant))
    matching = [k for k in table if k in order]
    if not matching:
        assert chosen is None
        return
    assert chosen in table and chosen in order
    assert all(order.index(chosen) <= order.index(k) for k in matching)
    # a rule that does not apply to this message never changes the outcome
    assert choose({k for k in table if k in order}, sender, rcpt, tenant) == chosen
    # a recipient rule beats every sender-side rule, whatever else is there
    if ("recipient", rcpt) in table:
        assert chosen == ("recipient", rcpt)
    # taking away a less specific rule changes nothing; taking away the chosen one moves down the order
    for k in matching:
        if k != chosen:
            assert choose(table - {k}, sender, rcpt, tenant) == chosen
    after = choose(table - {chosen}, sender, rcpt, tenant)
    assert after is None or order.index(after) > order.index(chosen)


# --- rule syntax and relay next hops ----------------------------------------------------------


@pytest.mark.parametrize(("scope", "match", "key"), [
    ("recipient", "Partner.Example", ("recipient", "partner.example")),
    ("recipient", ".Partner.Example", ("recipient", ".partner.example")),
    ("recipient", "*", ("default", "*")),
    ("sender", "CEO@Acme.Example", ("sender", "ceo@acme.example")),
    ("sender", "@acme.example", ("domain", "acme.example")),
    ("domain", "ACME.example", ("domain", "acme.example")),
    ("tenant", "Acme", ("tenant", "acme")),
    ("default", "*", ("default", "*")),
])
def test_rule_keys(scope: str, match: str, key: tuple[str, str]) -> None:
    assert rule_key(scope, match) == key


@pytest.mark.parametrize(("scope", "match", "says"), [
    ("planet", "x", "rule kind 'planet'"),
    ("recipient", "not a domain", "recipient"),
    ("recipient", ".", "recipient"),
    ("default", "acme.example", "'*' only"),
    ("sender", "a@@b", "sender"),
])
def test_bad_rules_are_refused(scope: str, match: str, says: str) -> None:
    with pytest.raises(TransportError, match=says):
        rule_key(scope, match)


@pytest.mark.parametrize(("text", "parsed"), [
    ("relay:[smtp.example]:2525", ("smtp.example", 2525)),
    ("[10.0.0.1]:25", ("10.0.0.1", 25)),
    ("[::1]:587", ("::1", 587)),
    ("smtp.example:465", ("smtp.example", 465)),
    ("smtp.example", ("smtp.example", None)),
])
def test_next_hops(text: str, parsed: tuple[str, int | None]) -> None:
    assert parse_nexthop(text) == parsed


@pytest.mark.parametrize("text", ["relay:[smtp.example", "relay:[h]:99999", "h:abc", "::1:25", "[h]x", "relay:[]:25",
                                  "relay:[h]:", "h:0"])
def test_malformed_next_hops(text: str) -> None:
    with pytest.raises(TransportError, match="relay"):
        parse_nexthop(text)


# --- the store --------------------------------------------------------------------------------


def rows(world) -> list[tuple[str, str]]:  # noqa: ANN001
    with world.engine.connect() as conn:
        return sorted((r.scope, r.match) for r in conn.execute(sa.select(transport_table)))


def test_refused_rules_save_nothing(world) -> None:  # noqa: ANN001
    t = Transports(world.engine, check_interval=0)
    refused = [
        (("domain", "foreign.example", "mx"), {}, "not one of ours"),
        (("sender", "x@foreign.example", "mx"), {}, "not one of ours"),
        (("sender", "@foreign.example", "mx"), {}, "not one of ours"),
        (("tenant", "nobody", "mx"), {}, "no tenant"),
        (("recipient", "acme.example", "mx"), {}, "one of our domains"),
        (("recipient", "partner.example", "relay"), {"host": "no-such-host.invalid", "port": 25},
         "does not resolve"),
        (("recipient", "partner.example", "relay"), {"host": "bad host!", "port": 25}, "not a host name"),
        (("recipient", "partner.example", "relay"), {"host": "127.0.0.1", "port": 70000}, "port"),
        (("recipient", "partner.example", "relay"), {"host": "127.0.0.1", "tls": "maybe"}, "tls"),
        (("recipient", "partner.example", "carrier-pigeon"), {}, "must be relay, mx or lmtp"),
        (("planet", "x", "mx"), {}, "rule kind"),
    ]
    for args, kwargs, says in refused:
        with pytest.raises(TransportError, match=says):
            t.set(*args, **kwargs)
    assert rows(world) == []
    t.set("recipient", "partner.example", "relay", host="localhost", port=2525, tls="none")
    assert rows(world) == [("recipient", "partner.example")]
    with pytest.raises(TransportError, match="does not resolve"):  # a bad change leaves the old rule as it was
        t.set("recipient", "partner.example", "relay", host="no-such-host.invalid", port=25)
    assert t.resolve("alice@acme.example", "bob@partner.example").transport.host == "localhost"


def test_resolve_says_which_rule_applies(world) -> None:  # noqa: ANN001
    t = Transports(world.engine, check_interval=0)
    assert t.resolve("alice@acme.example", "bob@partner.example").rule is None
    t.set("default", "*", "relay", host="127.0.0.1", port=2500, tls="none")
    t.set("tenant", "acme", "relay", host="127.0.0.2", port=2500, tls="none")
    t.set("sender", "@news.acme.example", "mx")
    t.set("recipient", ".partner.example", "relay", host="127.0.0.3", port=2500, tls="none")
    t.set("recipient", "partner.example", "relay", host="127.0.0.4", port=2500, tls="none")
    route = t.resolve("Alice@ACME.example", "bob@Partner.Example")
    assert (route.rule, route.transport.host, route.tenant) == (("recipient", "partner.example"), "127.0.0.4", "acme")
    assert route.why == "recipient partner.example (recipient domain)"
    assert t.resolve("alice@acme.example", "bob@eu.partner.example").transport.host == "127.0.0.3"
    assert t.resolve("x@news.acme.example", "bob@else.example").rule == ("domain", "news.acme.example")
    assert t.resolve("alice@acme.example", "bob@else.example").rule == ("tenant", "acme")
    assert t.resolve("gina@globex.example", "bob@else.example").rule == ("default", "*")
    assert t.resolve("gina@globex.example", "bob@else.example", tenant="ACME").rule == ("tenant", "acme")
    assert t.resolve("<>", "bob@else.example").rule == ("default", "*")
    as_json = t.resolve("alice@acme.example", "bob@partner.example").as_dict()
    assert as_json["transport"] == "relay:[127.0.0.4]:2500" and as_json["rule"]["kind"] == "recipient domain"
    t.remove("recipient", "partner.example")
    assert t.resolve("alice@acme.example", "bob@partner.example").rule == ("tenant", "acme")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_change_elsewhere_is_seen_at_the_next_check(world) -> None:  # noqa: ANN001
    """Another process's copy (another instance here) follows a change within its check interval and
    reads the table again only when a generation moved."""
    clock = Clock()
    worker = Transports(world.engine, check_interval=1.0, clock=clock)
    admin = Transports(world.engine, check_interval=0)
    assert worker.resolve("alice@acme.example", "bob@partner.example").rule is None
    loads = worker.db_loads
    for _ in range(5):
        clock.now += 0.5
        worker.resolve("alice@acme.example", "bob@partner.example")
    assert worker.db_loads == loads  # nothing changed: checked, not read again
    admin.set("recipient", "partner.example", "mx")
    clock.now += 0.2
    assert worker.resolve("alice@acme.example", "bob@partner.example").rule is None  # within the interval
    clock.now += 1.0
    assert worker.resolve("alice@acme.example", "bob@partner.example").rule == ("recipient", "partner.example")
    assert worker.db_loads == loads + 1
    admin.remove("recipient", "partner.example")
    clock.now += 1.0
    assert worker.resolve("alice@acme.example", "bob@partner.example").rule is None


def test_a_domain_given_to_another_tenant_takes_its_tenant_rule(world) -> None:  # noqa: ANN001
    clock = Clock()
    worker = Transports(world.engine, check_interval=1.0, clock=clock)
    admin = Transports(world.engine, check_interval=0)
    admin.set("tenant", "globex", "relay", host="127.0.0.9", port=2525, tls="none")
    clock.now += 1.0
    assert worker.resolve("x@news.acme.example", "bob@else.example").rule is None
    world.directory.domain_rm("news.acme.example")  # given to the other tenant
    world.directory.domain_add("news.acme.example", "globex")
    clock.now += 1.0
    assert worker.resolve("x@news.acme.example", "bob@else.example").rule == ("tenant", "globex")


# --- the delivery agent -----------------------------------------------------------------------


def test_one_message_leaves_by_each_recipients_own_transport(world, tmp_path) -> None:  # noqa: ANN001
    from dovetail.outbound.delivery import AgentConfig, OutboundAgent

    from .sink import Sink
    from .test_delivery import deliver, queued

    t = Transports(world.engine, check_interval=0)
    with Sink(None) as one, Sink(None) as two:
        t.set("recipient", "alpha.example", "relay", host="127.0.0.1", port=one.port, tls="none")
        t.set("recipient", ".beta.example", "relay", host="127.0.0.1", port=two.port, tls="none")
        t.set("default", "*", "relay", host="127.0.0.1", port=one.port, tls="none")
        agent = OutboundAgent(t, None, AgentConfig(hostname="out.acme.example", connect_timeout=5, command_timeout=5))
        results = deliver(agent, queued(tmp_path, ["a1@alpha.example", "b1@mx.beta.example", "a2@alpha.example",
                                                   "c1@gamma.example"]))
    assert [r.status for r in results] == ["sent"] * 4
    assert sorted(r for m in one.handler.messages for r in m.recipients) == \
        ["a1@alpha.example", "a2@alpha.example", "c1@gamma.example"]  # one session: the same relay
    assert [m.recipients for m in two.handler.messages] == [["b1@mx.beta.example"]]
    assert len(one.handler.messages) == 1
