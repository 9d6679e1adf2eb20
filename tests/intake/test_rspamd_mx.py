"""rspamd and clamav-milter at a running MX, for real: rspamd's HTTP protocol and milter proxy (GTUBE, a clean
message, thresholds), ClamAV's milter (EICAR)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from dovetail.intake.contentfilter import ContentFilter, Thresholds
from dovetail.intake.headeredit import split_fields
from dovetail.intake.milter import parse_milter
from dovetail.intake.milter.client import Timeouts
from dovetail.intake.rspamd import RspamdClient
from dovetail.intake.senderauth import SenderAuth
from dovetail.mailauth.dns import Resolver as DnsResolver
from tests.clamav_server import EICAR, ClamavMilter
from tests.dnsserver import LoopbackDNS
from tests.master.harness import free_port
from tests.rspamd_server import RspamdServer

from .mxstack import OUR_ID, Mx, make_mx, message

pytestmark = pytest.mark.timeout(400)  # the first test to use rspamd waits for its start (rule compilation)

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


@pytest.fixture
def mx(tmp_path: Path) -> Mx:
    return make_mx(tmp_path)


def _http(url: str, *, default: str = "tempfail", thresholds: Thresholds | None = None,
          per_rcpt: dict[str, Thresholds] | None = None) -> ContentFilter:
    async def lookup(rcpt: str) -> Thresholds | None:
        return (per_rcpt or {}).get(rcpt, thresholds)
    return ContentFilter(OUR_ID, OUR_ID, rspamd=RspamdClient(url, 10), rspamd_default_action=default,
                         thresholds=lookup)


def _head(raw: bytes) -> bytes:
    return raw.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0]


def _fields(head: bytes) -> list[bytes]:
    return [f.rstrip(b"\n") for f in split_fields(head + b"\n")]


def test_gtube_is_rejected(mx: Mx, rspamd: RspamdServer) -> None:
    code, text = mx.send(message(body=GTUBE + "\r\n"), _http(rspamd.url))
    assert code == 550 and text.startswith("5.7.1")
    assert mx.queued() == [] and mx.counts.get("spam_reject") == 1


def test_clean_message_is_delivered_with_our_spam_headers(mx: Mx, rspamd: RspamdServer) -> None:
    forged = "X-Spam-Flag: YES\r\nX-Spam-Score: 99\r\n"
    code, _ = mx.send(message(body="Thanks for the call yesterday, see you Monday.\r\n", extra=forged),
                      _http(rspamd.url))
    assert code == 250
    mx.deliver()
    (stored,) = mx.folder("bob@acme.example")
    head = _head(stored)
    assert head.count(b"X-Spam-Flag:") == 1 and b"X-Spam-Flag: NO" in head
    assert b"X-Spam-Score: 99" not in head
    assert b"X-Spam-Status: No, score=" in head
    assert f"Authentication-Results: {OUR_ID};".encode() in head and b"spam=no (rspamd score=" in head


def test_tenant_threshold_sends_spam_to_junk(mx: Mx, rspamd: RspamdServer) -> None:
    cf = _http(rspamd.url, thresholds=Thresholds(add_header=-100))  # everything scores above -100
    assert mx.send(message(), cf)[0] == 250
    mx.deliver()
    assert mx.folder("bob@acme.example") == []
    (junk,) = mx.folder("bob@acme.example", "Junk")
    assert b"X-Spam-Flag: YES" in junk and b"spam=yes" in junk


def test_tenant_thresholds_rewrite_subject_greylist_and_reject(mx: Mx, rspamd: RspamdServer) -> None:
    assert mx.send(message(subject="Offer"), _http(rspamd.url, thresholds=Thresholds(rewrite_subject=-100)))[0] == 250
    assert mx.send(message(), _http(rspamd.url, thresholds=Thresholds(greylist=-100)))[0] == 451
    assert mx.send(message(), _http(rspamd.url, thresholds=Thresholds(reject=-100)))[0] == 550
    mx.deliver()
    (junk,) = mx.folder("bob@acme.example", "Junk")
    assert b"Subject: *** SPAM *** Offer" in junk


def test_gtube_below_a_tenants_reject_threshold_goes_to_junk(mx: Mx, rspamd: RspamdServer) -> None:
    cf = _http(rspamd.url, thresholds=Thresholds(reject=1000, add_header=5))
    assert mx.send(message(body=GTUBE + "\r\n"), cf)[0] == 250
    mx.deliver()
    assert len(mx.folder("bob@acme.example", "Junk")) == 1


def test_refusal_needs_every_recipient_the_others_get_junk(mx: Mx, rspamd: RspamdServer) -> None:
    cf = _http(rspamd.url, per_rcpt={"bob@acme.example": Thresholds(reject=-100),
                                     "carol@acme.example": Thresholds(reject=1000)})
    assert mx.send(message(), cf, rcpts=("bob@acme.example", "carol@acme.example"))[0] == 250
    mx.deliver()
    assert len(mx.folder("bob@acme.example", "Junk")) == 1
    assert len(mx.folder("carol@acme.example")) == 1


def test_rspamd_down_gets_the_default_action(mx: Mx) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert mx.send(message(), _http(url))[0] == 451
    assert mx.send(message(), _http(url, default="reject"))[0] == 550
    assert mx.send(message(), _http(url, default="accept"))[0] == 250
    assert mx.counts.get("rspamd_error") == 3 and len(mx.queued()) == 1


def _milter(spec: str) -> ContentFilter:
    return ContentFilter(OUR_ID, OUR_ID, milters=[parse_milter(spec)], timeouts=Timeouts(5, 10, 30))


def test_gtube_through_rspamds_milter_proxy_is_rejected(mx: Mx, rspamd: RspamdServer) -> None:
    code, text = mx.send(message(body=GTUBE + "\r\n"), _milter(rspamd.milter))
    assert code == 554 or code == 550, (code, text)
    assert text.startswith("5.7.1") and mx.queued() == []


def test_clean_message_through_rspamds_milter_proxy_gets_its_headers(mx: Mx, rspamd: RspamdServer) -> None:
    code, _ = mx.send(message(body="See you on Monday at ten.\r\n"), _milter(rspamd.milter))
    assert code == 250
    (queued,) = mx.queued()
    head = _head(queued.read_message())
    assert b"X-Rspamd-Queue-Id:" in head or b"X-Spamd-Result:" in head or b"X-Rspamd-Action" in head, head


def test_both_paths_at_once_and_a_dead_milter_defers(mx: Mx, rspamd: RspamdServer) -> None:
    dead = f"inet:127.0.0.1:{free_port()}"
    cf = ContentFilter(OUR_ID, OUR_ID, milters=[parse_milter(dead)], rspamd=RspamdClient(rspamd.url, 10),
                       timeouts=Timeouts(2, 2, 2))
    assert mx.send(message(), cf)[0] == 451
    assert asyncio.run(cf.rspamd.close()) is None if cf.rspamd else True


def test_eicar_through_clamav_milter_is_rejected_clean_mail_is_tagged(mx: Mx, clamav: ClamavMilter) -> None:
    code, text = mx.send(message(body=EICAR + "\r\n"), _milter(clamav.milter))
    assert code == 550 and "Virus found" in text and mx.queued() == []
    assert mx.send(message(body="No virus here.\r\n"), _milter(clamav.milter))[0] == 250
    (queued,) = mx.queued()
    assert b"X-Virus-Status: Clean" in queued.read_message()


def test_spam_entry_joins_our_sender_auth_results(tmp_path: Path, rspamd: RspamdServer,
                                                  session_dns: LoopbackDNS) -> None:
    auth = SenderAuth(DnsResolver([session_dns.nameserver], timeout=2), OUR_ID)
    mx = make_mx(tmp_path, auth)
    forged = f"Authentication-Results: {OUR_ID}; spam=no\r\n"
    assert mx.send(message(extra=forged), _http(rspamd.url))[0] == 250
    fields = _fields(_head(mx.queued()[0].read_message()))
    assert [f.split(b":")[0] for f in fields[:4]] == [b"X-Spam-Flag", b"X-Spam-Score", b"X-Spam-Status",
                                                      b"Authentication-Results"]
    assert fields[3].startswith(f"Authentication-Results: {OUR_ID};".encode())
    assert b"spf=" in fields[3] and b"dmarc=" in fields[3] and b"spam=no (rspamd score=" in fields[3]
    assert sum(f.startswith(f"Authentication-Results: {OUR_ID}".encode()) for f in fields) == 1
    assert f"X-Original-Authentication-Results: {OUR_ID}; spam=no".encode() in fields


def test_without_sender_auth_a_forged_result_naming_us_is_renamed(mx: Mx, rspamd: RspamdServer) -> None:
    forged = f"Authentication-Results: {OUR_ID}; spam=no\r\n"
    assert mx.send(message(extra=forged), _http(rspamd.url, thresholds=Thresholds(add_header=-100)))[0] == 250
    fields = _fields(_head(mx.queued()[0].read_message()))
    (ours,) = [f for f in fields if f.startswith(f"Authentication-Results: {OUR_ID}".encode())]
    assert ours.startswith(f"Authentication-Results: {OUR_ID};\n\tspam=yes (rspamd score=".encode())
    assert f"X-Original-Authentication-Results: {OUR_ID}; spam=no".encode() in fields
