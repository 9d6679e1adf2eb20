"""The verdicts a running MX writes and acts on: ARC at intake and the trusted-sealer override, DKIM
signatures DMARC must not count, whose enforcement setting applies, and bad input with its log line."""

from __future__ import annotations

import email
import logging
from pathlib import Path

import pytest

from dovetail.mailauth.results import parse_ours
from tests.dnsserver import LoopbackDNS

from .corpus import Signer, message
from .dkimcorpus import Key, make_key, publish
from .test_mx_intake import Mx, _header, make_mx

AUTHOR_RESULTS = ("spf=pass smtp.mailfrom=author.test; dkim=pass header.d=author.test; "
                  "dmarc=pass header.from=author.test")


@pytest.fixture
def mx(tmp_path: Path, dns_server: LoopbackDNS) -> Mx:
    return make_mx(tmp_path, dns_server)


@pytest.fixture
def listed(mx: Mx) -> tuple[bytes, dict[str, Key]]:
    """An author.test message (p=reject) through the lists.test mailing list: subject tagged, footer
    added (the author's DKIM breaks), then sealed by the list with what it saw: DMARC pass."""
    keys = {"author": make_key("author.test", "a1"), "list": make_key("lists.test", "arc"),
            "relay": make_key("relay.test", "r1")}
    publish(mx.dns, *keys.values())
    mx.dns.txt("author.test", "v=spf1 ip4:192.0.2.1 -all")
    mx.dns.txt("_dmarc.author.test", "v=DMARC1; p=reject")
    mx.dns.txt("lists.test", "v=spf1 ip4:127.0.0.1 -all")
    original = message(from_="Alice <alice@author.test>", subject="Plans")
    signed = keys["author"].dkimpy_sign(original) + original
    changed = signed.replace(b"Subject: Plans", b"Subject: [team] Plans") + b"--\r\nteam list\r\n"
    return seal(changed, keys["list"], AUTHOR_RESULTS), keys


def seal(msg: bytes, key: Key, results: str) -> bytes:
    import dkim

    with_ar = f"Authentication-Results: {key.domain}; {results}\r\n".encode() + msg
    lines = dkim.arc_sign(with_ar, key.selector.encode(), key.domain.encode(), key.pem, key.domain.encode())
    assert len(lines) == 3, lines
    return b"".join(lines) + msg


def _story(caplog: pytest.LogCaptureFixture) -> str:
    """The verdict line the MX logged under the queue id of the last message."""
    lines = [r.getMessage() for r in caplog.records if "spf=" in r.getMessage() and "action=" in r.getMessage()]
    assert lines
    return lines[-1]


# --- ARC at intake --------------------------------------------------------------------------------

def test_arc_verdict_is_in_our_header_log_and_metrics(mx: Mx, listed, caplog) -> None:
    msg, _ = listed
    with caplog.at_level(logging.INFO):
        code, _ = mx.send(msg, sender="team-bounces@lists.test", rcpts=("carol@lax.example",))
    assert code == 250
    head = _header(mx.queued()[0])
    assert b"arc=pass (i=1 sealed by lists.test) header.oldest-pass=0 smtp.remote-ip=127.0.0.1" in head
    assert b"dmarc=fail" in head and b"policy.override" not in head  # no sealer is trusted by default
    story = _story(caplog)
    assert "spf=pass" in story and "dkim=fail (d=author.test)" in story and "dmarc=fail" in story
    assert "arc=pass (i=1 sealed by lists.test)" in story
    assert mx.counts["arc_pass"] == 1 and "dmarc_override" not in mx.counts


def test_untrusted_sealer_does_not_save_a_dmarc_reject(mx: Mx, listed) -> None:
    msg, _ = listed
    code, text = mx.send(msg, sender="team-bounces@lists.test")
    assert code == 550 and "author.test" in text
    mx.auth.trusted_sealers = ["other-lists.test"]
    assert mx.send(msg, sender="team-bounces@lists.test")[0] == 550


def test_trusted_sealer_overrides_the_dmarc_reject(mx: Mx, listed, caplog) -> None:
    msg, _ = listed
    mx.auth.trusted_sealers = ["lists.test"]
    with caplog.at_level(logging.INFO):
        code, _ = mx.send(msg, sender="team-bounces@lists.test")
    assert code == 250
    (queued,) = mx.queued()
    assert queued.envelope.extra == {}  # not quarantined either
    head = _header(queued)
    assert b"dmarc=fail (p=reject dis=none; " in head
    assert b"; policy overridden: trusted ARC sealer lists.test [i=1] saw dmarc=pass)" in head
    assert b"policy.override=arc" in head and b"arc=pass" in head
    assert "policy.override=arc (trusted ARC sealer lists.test" in _story(caplog)
    assert mx.counts["dmarc_override"] == 1
    values = email.message_from_bytes(queued.read_message()).get_all("Authentication-Results")
    auth = parse_ours([str(v) for v in values], "mx.ours.test")  # what the replies engine and webhooks take
    assert auth["arc"] == "pass" and auth["dmarc"]["override"] == "arc" and auth["dmarc"]["result"] == "fail"


def test_trusted_sealer_that_saw_dmarc_fail_changes_nothing(mx: Mx, listed) -> None:
    _, keys = listed
    original = message(from_="Alice <alice@author.test>")
    msg = seal(original, keys["list"], "spf=fail smtp.mailfrom=author.test; dmarc=fail header.from=author.test")
    mx.auth.trusted_sealers = ["lists.test"]
    assert mx.send(msg, sender="team-bounces@lists.test")[0] == 550


def test_broken_chain_is_arc_fail_and_never_overrides(mx: Mx, listed) -> None:
    msg, _ = listed
    mx.auth.trusted_sealers = ["lists.test"]
    tampered = msg.replace(b"team list", b"evil list")  # after the seal: the list's AMS breaks
    assert mx.send(tampered, sender="team-bounces@lists.test")[0] == 550
    code, _ = mx.send(tampered, sender="team-bounces@lists.test", rcpts=("carol@lax.example",))
    assert code == 250
    head = _header(mx.queued()[0])
    assert b"arc=fail (ARC-Message-Signature i=1: body hash did not verify) smtp.remote-ip=127.0.0.1" in head
    assert mx.counts["arc_fail"] == 2


def test_change_after_the_trusted_seal_is_not_covered(mx: Mx, listed) -> None:
    """A later, untrusted hop that changes the body and seals again: the chain still passes, but the
    trusted list's verdict is about a message that no longer exists (oldest-pass is newer than it)."""
    msg, keys = listed
    mx.auth.trusted_sealers = ["lists.test"]
    relayed = seal(msg + b"appended by relay\r\n", keys["relay"], "arc=pass")
    code, _ = mx.send(relayed, sender="team-bounces@lists.test", rcpts=("carol@lax.example",))
    assert code == 250
    head = _header(mx.queued()[0])
    assert b"arc=pass (i=2 sealed by lists.test, relay.test) header.oldest-pass=2" in head
    assert b"policy.override" not in head
    assert mx.send(relayed, sender="team-bounces@lists.test")[0] == 550


# --- DKIM signatures DMARC does not count ---------------------------------------------------------

@pytest.mark.parametrize(("sign", "dkim_text"), [
    (lambda s, m: s.sign(m, algorithm=b"rsa-sha1"), b"dkim=policy (rsa-sha1 verified but not accepted [RFC 8301]"),
    (lambda s, m: s.sign(m, length=True) + b"P.S. wire the money today\r\n",
     b" body octets unsigned: not accepted; body length limited [l=]"),
])
def test_signatures_dmarc_must_not_count(mx: Mx, sign, dkim_text: bytes) -> None:
    """Aligned with the From domain (sender.test, p=reject) and cryptographically valid, but rsa-sha1 or
    with content after l=: DKIM is reported ``policy``, DMARC fails, the reject is applied."""
    msg = sign(Signer(mx.dns, "sender.test", "old"), message())
    assert mx.send(msg, sender="a@nothing.test")[0] == 550
    assert mx.send(msg, sender="a@nothing.test", rcpts=("carol@lax.example",))[0] == 250
    head = _header(mx.queued()[0])
    assert dkim_text in head and b"header.d=sender.test" in head and b"dmarc=fail" in head
    assert mx.counts["dkim_policy"] == 2


def test_512_bit_key_fails_dkim_and_dmarc(mx: Mx, caplog) -> None:
    key = make_key("sender.test", "tiny", "rsa512")
    publish(mx.dns, key)
    msg = key.dkimpy_sign(message()) + message()
    assert mx.send(msg, sender="a@nothing.test")[0] == 550
    with caplog.at_level(logging.INFO):
        assert mx.send(msg, sender="a@nothing.test", rcpts=("carol@lax.example",))[0] == 250
    head = _header(mx.queued()[0])
    assert b"dkim=permerror (RSA key of 512 bits is too short [RFC 8301]; 512-bit key)" in head
    assert "dkim=permerror (d=sender.test)" in _story(caplog)


# --- whose enforcement setting applies ------------------------------------------------------------

def test_domain_then_tenant_then_global_enforcement(mx: Mx) -> None:
    forged = message(from_="ceo@bank.test")

    def code() -> int:
        result = mx.send(forged, sender="ceo@bank.test")[0]
        mx.queue.ids("incoming") and [mx.queue.delete(q) for q in mx.queue.ids("incoming")]
        return result

    assert code() == 550  # nothing set anywhere: mx.dmarc_enforce (on)
    mx.directory.tenant_set("acme", dmarc_enforce=False)
    assert code() == 250  # the tenant turned it off
    mx.directory.domain_set("acme.example", dmarc_enforce=True)
    assert code() == 550  # the domain's own setting comes first
    mx.directory.tenant_set("acme", dmarc_enforce=None)
    mx.directory.domain_set("acme.example", dmarc_enforce=None)
    mx.auth.enforce = False
    assert code() == 250  # global off
    mx.directory.tenant_set("acme", dmarc_enforce=True)
    assert code() == 550  # a tenant may enforce although the global key does not


# --- bad input: a defined result and a log line ---------------------------------------------------

def _huge_spf(mx: Mx) -> None:
    for i in range(60):
        mx.dns.txt("huge.test", f"filler-{i}-" + "x" * 200)
    mx.dns.txt("huge.test", "v=spf1 ip4:127.0.0.1 -all")


def _loop(mx: Mx) -> None:
    mx.dns.cname("loop.test", "loop2.test")
    mx.dns.cname("loop2.test", "loop.test")
    mx.dns.cname("_dmarc.loop.test", "_dmarc.loop2.test")
    mx.dns.cname("_dmarc.loop2.test", "_dmarc.loop.test")


def _split_oddly(mx: Mx) -> None:
    mx.dns.txt("split.test", ["v=sp", "f1 ip4:127", ".0.0.1 -a", "ll"])
    mx.dns.txt("_dmarc.split.test", ["v=DMARC1;", " p=rej", "ect"])


def _idn(mx: Mx) -> None:
    mx.dns.txt("xn--bcher-kva.test", "v=spf1 ip4:127.0.0.1 -all")
    mx.dns.txt("_dmarc.xn--bcher-kva.test", "v=DMARC1; p=reject")


BAD_INPUT = [
    # (what, setup, message, MAIL FROM, reply code, text in the log line)
    ("malformed DKIM-Signature tags", None,
     b"DKIM-Signature: v=1; a=rsa-sha256; d=sender.test; s=s1; this is not a tag list\r\n" + message(),
     "bounce@sender.test", 250, "dkim=permerror (d=sender.test) dmarc=pass"),
    ("huge TXT answer (over TCP)", _huge_spf, message(from_="a@huge.test"), "a@huge.test", 250,
     "spf=pass dkim=none dmarc=none"),
    ("looping CNAME", _loop, message(from_="a@loop.test"), "a@loop.test", 250,
     "spf=temperror dkim=none dmarc=temperror (p=none dis=none from=loop.test; policy lookup: "
     "_dmarc.loop.test TXT: CNAME chain too long"),
    ("TXT split in odd places", _split_oddly, message(from_="a@split.test"), "a@split.test", 250,
     "spf=pass dkim=none dmarc=pass"),
    ("From with two domains", None, message(from_="a@sender.test, b@bank.test"), "a@sender.test", 550,
     "dmarc=fail (From has addresses of several domains)"),
    ("no From header", None, message().replace(b"From: Alice <alice@sender.test>\r\n", b""), "bounce@sender.test",
     550, "dmarc=fail (no From header)"),
    ("From with no address", None, message(from_="undisclosed-recipients:;"), "bounce@sender.test", 550,
     "dmarc=fail (From has no address with a domain)"),
    ("IDN From domain (U-label)", _idn, message(from_="a@bücher.test"), "a@xn--bcher-kva.test", 250,
     "spf=pass dkim=none dmarc=pass (p=reject dis=none from=xn--bcher-kva.test)"),
    ("non-ASCII garbage as From domain", None, message().replace(b"alice@sender.test", b"a@\xff\xfe.test"),
     "bounce@sender.test", 550,
     "dmarc=fail (From domain is not a valid name)"),
]


@pytest.mark.parametrize(("what", "setup", "msg", "sender", "code", "logged"), BAD_INPUT,
                         ids=[case[0] for case in BAD_INPUT])
def test_bad_input_gives_a_defined_result_and_a_log_line(mx: Mx, caplog, what, setup, msg, sender, code,
                                                         logged) -> None:
    if setup is not None:
        setup(mx)
    with caplog.at_level(logging.INFO):
        got, text = mx.send(msg, sender=sender)
    assert got == code, text
    assert logged in _story(caplog)
