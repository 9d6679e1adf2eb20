"""RFC 5321 path and parameter syntax."""

from __future__ import annotations

import pytest

from dovetail.smtp.address import AddressError, mail_params, parse_params, parse_path, rcpt_params, xtext_decode


@pytest.mark.parametrize(
    ("text", "address", "rest"),
    [
        ("<a@b.test>", "a@b.test", ""),
        ("<>", "", ""),
        ("<a.b+c@b-c.test> SIZE=1", "a.b+c@b-c.test", " SIZE=1"),
        ('<"john doe"@b.test>', '"john doe"@b.test', ""),
        ('<"a>b\\"c"@b.test>', '"a>b\\"c"@b.test', ""),
        ("<@relay1.test,@relay2.test:user@b.test>", "user@b.test", ""),
        ("<u@[192.0.2.1]>", "u@[192.0.2.1]", ""),
        ("<u@[IPv6:2001:db8::1]>", "u@[IPv6:2001:db8::1]", ""),
        ("<" + "l" * 64 + "@b.test>", "l" * 64 + "@b.test", ""),
        # an SRS address of a forwarder may be longer than 64 octets
        ("<SRS0=abcd=JY=" + "d" * 40 + ".example=" + "l" * 40 + "@b.test>",
         "SRS0=abcd=JY=" + "d" * 40 + ".example=" + "l" * 40 + "@b.test", ""),
    ],
)
def test_valid_paths(text: str, address: str, rest: str) -> None:
    assert parse_path(text, utf8=False, null_ok=True) == (address, rest)


@pytest.mark.parametrize(
    "text",
    [
        "a@b.test",
        "<a@b.test",
        "<a@b.test>x",
        "<a>",
        "<@b.test>",
        "<a@>",
        "<a..b@b.test>",
        "<.a@b.test>",
        "<a@-b.test>",
        "<a@b_c.test>",
        "<a b@b.test>",
        '<"unterminated@b.test>',
        "<u@[300.0.0.1]>",
        "<u@[IPv6:zz::1]>",
        "<@relay:>",
        "<relay:user@b.test>",
        "<" + "l" * 65 + "@b.test>",
        "<SRS0=" + "l" * 260 + "@b.test>",
        "<a@" + ("d" * 60 + ".") * 5 + "test>",
        "<jö@b.test>",
    ],
)
def test_invalid_paths(text: str) -> None:
    with pytest.raises(ValueError):
        parse_path(text, utf8=False, null_ok=True)


def test_null_and_postmaster_rules() -> None:
    with pytest.raises(ValueError):
        parse_path("<>", utf8=False, null_ok=False)
    assert parse_path("<postmaster>", utf8=False, null_ok=False, postmaster_ok=True)[0] == "postmaster"
    with pytest.raises(ValueError):
        parse_path("<postmaster>", utf8=False, null_ok=True)


def test_utf8_paths_need_utf8() -> None:
    assert parse_path("<jö@bücher.test>", utf8=True, null_ok=False)[0] == "jö@bücher.test"
    with pytest.raises(ValueError):
        parse_path("<jö@bücher.test>", utf8=False, null_ok=False)


def test_params() -> None:
    assert parse_params(" SIZE=10 smtputf8 body=8bitmime", utf8=False) == {
        "SIZE": "10",
        "SMTPUTF8": None,
        "BODY": "8bitmime",
    }
    for bad in (" SIZE=1 SIZE=2", " -X=1", " X=", " X=a=b"):
        with pytest.raises(ValueError):
            parse_params(bad, utf8=False)


def test_dsn_params() -> None:
    p = mail_params({"RET": "full", "ENVID": "QQ+2Bx"}, esmtp=True)
    assert (p.ret, p.envid) == ("FULL", "QQ+x")
    r = rcpt_params({"NOTIFY": "failure,delay", "ORCPT": "rfc822;a+2Bb@c.test"}, esmtp=True)
    assert r.notify == ("FAILURE", "DELAY") and r.orcpt == "rfc822;a+b@c.test"
    assert rcpt_params({"NOTIFY": "NEVER"}, esmtp=True).notify == ("NEVER",)
    for raw in ({"NOTIFY": "NEVER,DELAY"}, {"NOTIFY": "SUCCESS,SUCCESS"}, {"NOTIFY": None}, {"ORCPT": ";x"}):
        with pytest.raises(AddressError) as info:
            rcpt_params(raw, esmtp=True)
        assert info.value.reply.code == 501
    with pytest.raises(AddressError) as info:
        mail_params({"ENVID": "x" * 101}, esmtp=True)
    assert info.value.reply.code == 501


def test_xtext() -> None:
    assert xtext_decode("a+2Bb+3Dc") == "a+b=c"
    for bad in ("a+2b", "a+", "a=b", "a b"):
        with pytest.raises(ValueError):
            xtext_decode(bad)
