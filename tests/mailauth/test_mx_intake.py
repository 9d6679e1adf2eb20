"""Sender authentication at a running MX: real SMTP on loopback, the loopback DNS server, the real queue,
directory and Maildir delivery."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

import pytest

from dovetail.db import make_engine, migrate
from dovetail.directory import Directory, Resolver
from dovetail.intake.senderauth import SenderAuth
from dovetail.mailauth.dns import Resolver as DnsResolver
from dovetail.mailauth.passwords import hash_password
from dovetail.queue import Queue
from dovetail.queue.qfile import QueuedMessage
from tests.dnsserver import LoopbackDNS
from tests.intake.mxstack import Mx as MxStack

from .corpus import Signer, message

OUR_ID = "mx.ours.test"
_PASSWORD_HASH: list[str] = []  # one Argon2 hash for all tests: it costs more than the rest of a setup


def _hash() -> str:
    if not _PASSWORD_HASH:
        _PASSWORD_HASH.append(hash_password("pw"))
    return _PASSWORD_HASH[0]


@dataclass
class Mx(MxStack):
    """The intake MX with the test sender zones on ``dns`` and no content filter."""

    dns: LoopbackDNS | None = None

    def send(self, msg: bytes, content: object = None, *, sender: str = "bounce@sender.test",  # type: ignore[override]
             rcpts: tuple[str, ...] = ("bob@acme.example",), helo: str = "mail.sender.test",
             source: str = "127.0.0.1") -> tuple[int, str]:
        return super().send(msg, None, sender=sender, rcpts=rcpts, helo=helo, source=source)


def _files(maildir: Path, name: str) -> list[bytes]:
    folder = maildir if name == "INBOX" else maildir / f".{name}"
    subs = [folder / sub for sub in ("new", "cur") if (folder / sub).is_dir()]
    return [p.read_bytes() for sub in subs for p in sorted(sub.iterdir())]


@pytest.fixture
def mx(tmp_path: Path, dns_server: LoopbackDNS) -> Mx:
    return make_mx(tmp_path, dns_server)


def make_mx(tmp_path: Path, dns_server: LoopbackDNS) -> Mx:
    """An MX over a fresh directory (acme.example enforcing, lax.example not) and the test sender zones."""
    engine = make_engine(f"sqlite:///{tmp_path / 'dovetail.db'}")
    migrate(engine)
    directory = Directory(engine)
    directory.tenant_add("acme")
    directory.domain_add("acme.example", "acme")
    directory.domain_add("lax.example", "acme")
    directory.domain_set("lax.example", dmarc_enforce=False)
    directory.mailbox_add("bob@acme.example", _hash())
    directory.mailbox_add("carol@lax.example", _hash())
    resolver = Resolver(directory, tmp_path / "mail", check_interval=0)
    d = dns_server
    d.txt("sender.test", "v=spf1 ip4:127.0.0.1 -all")
    d.txt("_dmarc.sender.test", "v=DMARC1; p=reject")
    d.txt("bank.test", "v=spf1 ip4:192.0.2.1 -all")
    d.txt("_dmarc.bank.test", "v=DMARC1; p=reject; sp=quarantine")
    d.txt("shop.test", "v=spf1 ip4:192.0.2.1 -all")
    d.txt("_dmarc.shop.test", "v=DMARC1; p=quarantine")
    d.txt("relaxed.test", "v=spf1 ip4:192.0.2.1 -all")
    d.txt("_dmarc.relaxed.test", "v=DMARC1; p=none")
    d.txt("soft.test", "v=spf1 ~all")
    d.txt("zero.test", "v=spf1 -all")
    d.txt("_dmarc.zero.test", "v=DMARC1; p=reject; pct=0")
    # Generous: a loaded test machine can keep the loopback DNS thread from answering within a second.
    auth = SenderAuth(DnsResolver([d.nameserver], timeout=5.0), OUR_ID, exempt=[])
    return Mx(tmp_path, Queue(tmp_path / "queue"), directory, resolver, auth=auth, dns=d)


def _header(msg: QueuedMessage) -> bytes:
    return msg.read_message().split(b"\r\n\r\n", 1)[0]


def test_aligned_sender_passes_and_gets_our_header(mx: Mx) -> None:
    signed = Signer(mx.dns, "sender.test").sign(message())
    code, _ = mx.send(signed)
    assert code == 250
    (queued,) = mx.queued()
    head = _header(queued)
    assert head.startswith(b"Authentication-Results: mx.ours.test;\r\n\tspf=pass")
    assert b"dkim=pass" in head and b"header.d=sender.test" in head
    assert b"dmarc=pass" in head and b"header.from=sender.test" in head
    assert mx.counts["spf_pass"] == 1 and mx.counts["dkim_pass"] == 1 and mx.counts["dmarc_pass"] == 1
    mx.deliver()
    assert len(_files(mx.resolver.resolve("bob@acme.example").mailboxes[0].maildir, "INBOX")) == 1


@pytest.mark.parametrize(("sender", "spf"), [
    ("a@sender.test", "pass"), ("a@bank.test", "fail"), ("a@soft.test", "softfail"), ("a@nothing.test", "none"),
])
def test_spf_verdict_in_header(mx: Mx, sender: str, spf: str) -> None:
    code, _ = mx.send(message(from_="x@relaxed.test"), sender=sender)
    assert code == 250
    assert f"spf={spf} ".encode() in _header(mx.queued()[0])


def test_dmarc_reject_is_550_at_end_of_data(mx: Mx) -> None:
    forged = message(from_="CEO <ceo@bank.test>")
    code, text = mx.send(forged, sender="ceo@bank.test")
    assert code == 550 and "5.7.1" in text and "bank.test" in text
    assert mx.queued() == [] and mx.counts["dmarc_reject"] == 1 and mx.counts["rejected"] == 1


def test_dmarc_quarantine_lands_in_junk(mx: Mx) -> None:
    code, _ = mx.send(message(from_="deals@shop.test"), sender="deals@shop.test")
    assert code == 250
    (queued,) = mx.queued()
    assert queued.envelope.extra == {"junk": "0"}
    mx.deliver()
    maildir = mx.resolver.resolve("bob@acme.example").mailboxes[0].maildir
    assert _files(maildir, "INBOX") == []
    (junk,) = _files(maildir, "Junk")
    assert b"dmarc=fail" in junk and b"policy.dmarc=quarantine" in junk


def test_subdomain_policy_sp(mx: Mx) -> None:
    """bank.test says p=reject but sp=quarantine: mail from a subdomain goes to Junk, not refused."""
    code, _ = mx.send(message(from_="alerts@alerts.bank.test"), sender="alerts@alerts.bank.test")
    assert code == 250
    assert mx.queued()[0].envelope.extra == {"junk": "0"}


def test_dmarc_none_is_delivered(mx: Mx) -> None:
    code, _ = mx.send(message(from_="news@relaxed.test"), sender="news@relaxed.test")
    assert code == 250
    assert mx.queued()[0].envelope.extra == {}
    assert b"dmarc=fail" in _header(mx.queued()[0])


def test_pct_zero_downgrades_reject_to_quarantine(mx: Mx) -> None:
    code, _ = mx.send(message(from_="a@zero.test"), sender="a@zero.test")
    assert code == 250 and mx.queued()[0].envelope.extra == {"junk": "0"}


def test_domain_with_enforcement_off_gets_the_mail(mx: Mx) -> None:
    code, _ = mx.send(message(from_="ceo@bank.test"), sender="ceo@bank.test", rcpts=("carol@lax.example",))
    assert code == 250 and mx.queued()[0].envelope.extra == {}
    # one enforcing and one lax recipient: accepted, the enforcing one's copy goes to Junk
    mx.deliver()
    code, _ = mx.send(message(from_="ceo@bank.test"), sender="ceo@bank.test",
                      rcpts=("bob@acme.example", "carol@lax.example"))
    assert code == 250 and mx.queued()[0].envelope.extra == {"junk": "0"}


def test_global_switch_off_enforces_nothing(mx: Mx) -> None:
    mx.auth.enforce = False
    code, _ = mx.send(message(from_="ceo@bank.test"), sender="ceo@bank.test")
    assert code == 250 and b"dmarc=fail" in _header(mx.queued()[0])


def test_two_from_addresses_are_refused(mx: Mx) -> None:
    code, text = mx.send(message(from_="a@sender.test, b@bank.test"), sender="a@sender.test")
    assert code == 550 and "From" in text


def test_forged_results_with_our_id_are_renamed(mx: Mx) -> None:
    forged = message(from_="x@relaxed.test",
                     extra="Authentication-Results: mx.ours.test; dmarc=pass header.from=bank.test\r\n"
                           "Authentication-Results: elsewhere.test; spf=pass\r\n")
    assert mx.send(forged, sender="x@relaxed.test")[0] == 250
    head = _header(mx.queued()[0])
    assert head.startswith(b"Authentication-Results: mx.ours.test;")  # ours, at the top, and only ours
    assert b"\nAuthentication-Results: mx.ours.test" not in head
    assert b"X-Original-Authentication-Results: mx.ours.test; dmarc=pass header.from=bank.test" in head
    assert b"\r\nAuthentication-Results: elsewhere.test; spf=pass" in head


def test_exempt_clients_are_not_checked_but_forgeries_renamed(mx: Mx) -> None:
    mx.auth.exempt = [ipaddress.ip_network("127.0.0.0/8")]
    forged = message(from_="ceo@bank.test", extra="Authentication-Results: mx.ours.test; dmarc=pass\r\n")
    assert mx.send(forged, sender="ceo@bank.test")[0] == 250
    head = _header(mx.queued()[0])
    assert b"\nAuthentication-Results:" not in head and not head.startswith(b"Authentication-Results")
    assert b"X-Original-Authentication-Results: mx.ours.test; dmarc=pass" in head


def test_dns_timeout_is_451_only_when_the_policy_says_so(mx: Mx) -> None:
    mx.dns.txt("slow.test", "v=spf1 ip4:127.0.0.1 -all")
    mx.dns.silence("_dmarc.slow.test")
    mx.auth.resolver = DnsResolver([mx.dns.nameserver], timeout=0.3)
    code, _ = mx.send(message(from_="a@slow.test"), sender="a@slow.test")
    assert code == 250 and b"dmarc=temperror" in _header(mx.queued()[0])
    mx.auth.temperror = "defer"
    code, text = mx.send(message(from_="a@slow.test"), sender="a@slow.test")
    assert code == 451 and "4.4.3" in text


def test_null_sender_is_judged_by_helo(mx: Mx) -> None:
    mx.dns.txt("mail.sender.test", "v=spf1 ip4:127.0.0.1 -all")
    code, _ = mx.send(message(from_="mailer-daemon@sender.test"), sender="")
    assert code == 250
    head = _header(mx.queued()[0])
    assert b"spf=pass" in head and b"smtp.helo=mail.sender.test" in head and b"dmarc=pass" in head


def test_large_message_is_judged_without_dkim(mx: Mx) -> None:
    mx.auth.hold_bytes = 64 * 1024
    big = message(from_="a@sender.test", body="x" * 100 + "\r\n" * 1 + ("y" * 998 + "\r\n") * 300)
    code, _ = mx.send(Signer(mx.dns, "sender.test").sign(big))
    assert code == 250
    (queued,) = mx.queued()
    head = _header(queued)
    assert b"dkim=none (message too large: DKIM not verified)" in head and b"dmarc=pass" in head
    assert b"\tarc=" not in head  # not verified: nothing said (a forwarder then verifies the chain itself)
    assert queued.read_message().endswith(("y" * 998 + "\r\n").encode())
