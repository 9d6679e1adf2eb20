"""The trusted-sealer override on its own: which ARC chains may lift a DMARC fail, and which may not."""

from __future__ import annotations

import pytest

from dovetail.config import KEY_INDEX
from dovetail.mailauth.arcpolicy import trusted_override
from dovetail.mailauth.results import ArcResult, DmarcResult

FAIL = DmarcResult("fail", "author.test", "reject", "reject", "author.test", "neither SPF nor DKIM aligned")
SAW_PASS = "lists.test; dkim=pass header.d=author.test; dmarc=pass (p=reject) header.from=author.test"


def chain(*sets: tuple[str, str], oldest_pass: int = 0, result: str = "pass") -> ArcResult:
    return ArcResult(result, len(sets), "", oldest_pass, tuple(s for s, _ in sets), results=tuple(r for _, r in sets))


def test_trusted_sealer_that_saw_dmarc_pass_lifts_the_disposition() -> None:
    out = trusted_override(FAIL, chain(("lists.test", SAW_PASS)), ["Lists.Test."])
    assert (out.result, out.disposition, out.override) == ("fail", "none", "arc")
    assert out.override_reason == "trusted ARC sealer lists.test (i=1) saw dmarc=pass"


@pytest.mark.parametrize(("dmarc", "arc", "trusted"), [
    (FAIL, chain(("lists.test", SAW_PASS)), []),  # nobody trusted (the default)
    (FAIL, chain(("other.test", SAW_PASS)), ["lists.test"]),  # sealed by someone else
    (FAIL, chain(("lists.test", SAW_PASS), result="fail"), ["lists.test"]),  # the chain does not verify
    (FAIL, chain(("lists.test", SAW_PASS.replace("header.from=author.test", "header.from=evil.test"))),
     ["lists.test"]),  # the sealer vouched for another From domain
    (FAIL, chain(("lists.test", "lists.test; dmarc=fail header.from=author.test")), ["lists.test"]),
    (FAIL, chain(("lists.test", "lists.test; this is not ( an A-R")), ["lists.test"]),
    (FAIL, chain(("lists.test", SAW_PASS), ("relay.test", "relay.test; arc=pass"), oldest_pass=2),
     ["lists.test"]),  # changed by the relay after the trusted list sealed it
    (DmarcResult("pass", "author.test", "reject"), chain(("lists.test", SAW_PASS)), ["lists.test"]),
])
def test_no_override(dmarc: DmarcResult, arc: ArcResult, trusted: list[str]) -> None:
    assert trusted_override(dmarc, arc, trusted) is dmarc


def test_newest_trusted_set_is_the_one_believed() -> None:
    arc = chain(("lists.test", SAW_PASS), ("lists.test", "lists.test; dmarc=fail header.from=author.test"))
    assert trusted_override(FAIL, arc, ["lists.test"]).override == ""
    arc = chain(("lists.test", SAW_PASS), ("relay.test", "relay.test; arc=pass"))  # untrusted hop after, unchanged
    assert trusted_override(FAIL, arc, ["lists.test"]).override == "arc"


def test_trusted_sealers_setting() -> None:
    parse = KEY_INDEX["mx.arc_trusted_sealers"].parse
    assert parse("lists.example.org, Google.com. bücher.example") == [
        "lists.example.org", "google.com", "xn--bcher-kva.example"]
    assert parse("") == [] and parse(["a.example"]) == ["a.example"]
    with pytest.raises(ValueError, match="not a domain name"):
        parse("not_a domain!")
