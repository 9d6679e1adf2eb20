"""The Authentication-Results header: written by us, parsed back with authres, forged ones renamed."""

from __future__ import annotations

from dovetail.mailauth.headers import authserv_id, rename_ours, split_message
from dovetail.mailauth.results import DkimResult, DmarcResult, SpfResult, Verdicts, authentication_results, parse_ours

VERDICTS = Verdicts(
    spf=SpfResult("pass", "sender.test", "mfrom", "bounce@sender.test"),
    helo=None,
    dkim=(DkimResult("sender.test", "s1", "pass", "rsa-sha256", key_bits=2048, signature_b="AbCd1234"),
          DkimResult("list.test", "k", "fail", "ed25519-sha256", "signature did not verify", True)),
    dmarc=DmarcResult("pass", "sender.test", "reject", "none", "sender.test"),
)


def test_written_header_parses_back() -> None:
    header = authentication_results("mx.ours.test", VERDICTS)
    assert header.startswith(b"Authentication-Results: mx.ours.test;\r\n\t") and header.endswith(b"\r\n")
    name, _, value = header.decode().partition(":")
    auth = parse_ours([value], "mx.ours.test")
    assert auth == {"spf": "pass",
                    "dkim": [{"domain": "sender.test", "selector": "s1", "result": "pass"},
                             {"domain": "list.test", "selector": "k", "result": "fail"}],
                    "dmarc": {"result": "pass", "policy": "reject", "from_domain": "sender.test", "override": None},
                    "arc": "none", "spam": None}
    assert b"body length limited" in header


def test_other_servers_headers_are_not_ours() -> None:
    value = " other.test; spf=pass smtp.mailfrom=a@b.test; dmarc=pass header.from=b.test"
    assert parse_ours([value], "mx.ours.test") == {"spf": None, "dkim": [], "dmarc": None, "arc": None,
                                                   "spam": None}


def test_forged_headers_with_our_id_are_renamed() -> None:
    head = (b"Received: from x\r\n"
            b"Authentication-Results: MX.Ours.Test (forged);\r\n\tdmarc=pass header.from=bank.test\r\n"
            b"authentication-results:mx.ours.test; spf=pass\r\n"
            b"Authentication-Results: other.test; spf=fail\r\n"
            b"Subject: hi\r\n\r\n")
    out, n = rename_ours(head, "mx.ours.test")
    assert n == 2
    assert out == (b"Received: from x\r\n"
                   b"X-Original-Authentication-Results: MX.Ours.Test (forged);\r\n"
                   b"\tdmarc=pass header.from=bank.test\r\n"
                   b"X-Original-Authentication-Results:mx.ours.test; spf=pass\r\n"
                   b"Authentication-Results: other.test; spf=fail\r\n"
                   b"Subject: hi\r\n\r\n")


def test_authserv_id_and_split() -> None:
    assert authserv_id(b" (comment) Example.Net. 1; none") == "example.net"
    assert split_message(b"A: 1\r\nB: 2\r\n\r\nbody\r\n") == (b"A: 1\r\nB: 2\r\n", b"\r\nbody\r\n")
    assert split_message(b"A: 1\r\n") == (b"A: 1\r\n", b"")
