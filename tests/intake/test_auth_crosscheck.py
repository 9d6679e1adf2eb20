"""Our sender-authentication verdicts against rspamd's on the same messages, the same envelope and the same
(loopback) DNS: an independent implementation agrees on SPF, DKIM and DMARC."""

from __future__ import annotations

import asyncio

import pytest

from dovetail.intake.rspamd import RspamdClient, RspamdEnvelope, RspamdResult
from dovetail.mailauth.check import authenticate
from dovetail.mailauth.dns import Resolver
from dovetail.mailauth.results import Verdicts
from tests.dnsserver import LoopbackDNS
from tests.mailauth.corpus import Signer, message
from tests.rspamd_server import RspamdServer

pytestmark = pytest.mark.timeout(400)  # the first test to use rspamd waits for its start (rule compilation)

CLIENT = "192.0.2.1"  # not loopback: rspamd skips sender checks for local addresses

# our result -> the symbol rspamd shows for it
SPF = {"pass": "R_SPF_ALLOW", "fail": "R_SPF_FAIL", "softfail": "R_SPF_SOFTFAIL", "neutral": "R_SPF_NEUTRAL",
       "none": "R_SPF_NA"}
DKIM = {"pass": "R_DKIM_ALLOW", "fail": "R_DKIM_REJECT", "none": "R_DKIM_NA"}
DMARC = {("pass", None): "DMARC_POLICY_ALLOW", ("fail", "reject"): "DMARC_POLICY_REJECT",
         ("fail", "quarantine"): "DMARC_POLICY_QUARANTINE", ("none", None): "DMARC_NA"}


@pytest.fixture(scope="module")
def zone(session_dns: LoopbackDNS) -> dict[str, Signer]:
    d = session_dns
    d.txt("xc-good.test", "v=spf1 ip4:192.0.2.1 -all")
    d.txt("_dmarc.xc-good.test", "v=DMARC1; p=reject")
    d.txt("xc-strict.test", "v=spf1 ip4:192.0.2.99 -all")
    d.txt("_dmarc.xc-strict.test", "v=DMARC1; p=reject")
    d.txt("xc-soft.test", "v=spf1 ip4:192.0.2.99 ~all")
    d.txt("_dmarc.xc-soft.test", "v=DMARC1; p=quarantine")
    for name in ("xc-good.test", "xc-strict.test", "xc-soft.test"):
        d.a(name, "192.0.2.10")
        d.mx(name, f"mx.{name}")
    return {"good": Signer(d, "xc-good.test"), "strict": Signer(d, "xc-strict.test")}


def _both(msg: bytes, sender: str, rspamd: RspamdServer, dns: LoopbackDNS) -> tuple[Verdicts, RspamdResult]:
    async def go() -> tuple[Verdicts, RspamdResult]:
        ours = await authenticate(msg, client_ip=CLIENT, helo="mail.xc-good.test", sender=sender,
                                  resolver=Resolver([dns.nameserver], timeout=2))
        client = RspamdClient(rspamd.url, 20)
        try:
            theirs = await client.check(msg, RspamdEnvelope(CLIENT, "mail.xc-good.test", sender,
                                                            ["bob@acme.example"], "XC1"))
        finally:
            await client.close()
        return ours, theirs
    return asyncio.run(go())


def _assert_agree(ours: Verdicts, theirs: RspamdResult) -> None:
    assert SPF[ours.spf.result] in theirs.symbols, (ours.spf, sorted(theirs.symbols))
    dkim = ours.dkim[0].result if ours.dkim else "none"
    assert DKIM[dkim] in theirs.symbols, (ours.dkim, sorted(theirs.symbols))
    key = (ours.dmarc.result, ours.dmarc.policy if ours.dmarc.result == "fail" else None)
    assert DMARC[key] in theirs.symbols, (ours.dmarc, sorted(theirs.symbols))


def test_aligned_dkim_pass(rspamd: RspamdServer, session_dns: LoopbackDNS, zone: dict[str, Signer]) -> None:
    msg = zone["good"].sign(message(from_="Alice <alice@xc-good.test>"))
    ours, theirs = _both(msg, "alice@xc-good.test", rspamd, session_dns)
    assert (ours.spf.result, ours.dkim[0].result, ours.dmarc.result) == ("pass", "pass", "pass")
    _assert_agree(ours, theirs)


def test_broken_body_hash(rspamd: RspamdServer, session_dns: LoopbackDNS, zone: dict[str, Signer]) -> None:
    msg = zone["strict"].sign(message(from_="Alice <alice@xc-strict.test>")).replace(b"see you.", b"see you!")
    ours, theirs = _both(msg, "alice@xc-strict.test", rspamd, session_dns)
    assert ours.dkim[0].result == "fail"
    _assert_agree(ours, theirs)


def test_spf_fail_and_dmarc_reject(rspamd: RspamdServer, session_dns: LoopbackDNS, zone: dict[str, Signer]) -> None:
    ours, theirs = _both(message(from_="Alice <alice@xc-strict.test>"), "alice@xc-strict.test", rspamd, session_dns)
    assert (ours.spf.result, ours.dmarc.result, ours.dmarc.policy) == ("fail", "fail", "reject")
    _assert_agree(ours, theirs)


def test_spf_softfail_and_dmarc_quarantine(rspamd: RspamdServer, session_dns: LoopbackDNS,
                                           zone: dict[str, Signer]) -> None:
    ours, theirs = _both(message(from_="Alice <alice@xc-soft.test>"), "alice@xc-soft.test", rspamd, session_dns)
    assert (ours.spf.result, ours.dmarc.result, ours.dmarc.policy) == ("softfail", "fail", "quarantine")
    _assert_agree(ours, theirs)
