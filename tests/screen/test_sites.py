"""DNSBL site syntax and scoring (sans-I/O)."""

from __future__ import annotations

import pytest

from dovetail.intake.screen.sites import is_error_code, parse_site, parse_sites, query_name, score


def test_postscreen_syntax() -> None:
    zen, bl, wl = parse_sites(["zen.spamhaus.org*3", "bl.example=127.0.0.[2..11]*2",
                               "list.dnswl.org=127.0.[0..255].[1..3]*-5"])
    assert (zen.domain, zen.octets, zen.weight) == ("zen.spamhaus.org", None, 3)
    assert bl.weight == 2 and bl.matches("127.0.0.2") and bl.matches("127.0.0.11")
    assert not bl.matches("127.0.0.12") and not bl.matches("127.0.0.1")
    assert wl.weight == -5 and wl.matches("127.0.15.3") and not wl.matches("127.0.15.4")
    assert parse_site("bl.example").weight == 1
    listed = parse_site("bl.example=127.0.0.[2;4;6]")
    assert listed.matches("127.0.0.4") and not listed.matches("127.0.0.5")


@pytest.mark.parametrize("bad", ["", "nodots*3", "bl.example=127.0.0*2", "bl.example=127.0.0.[9..2]",
                                 "bl.example=127.0.0.300", "bl.example*x"])
def test_bad_sites_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_site(bad)


def test_query_names() -> None:
    assert query_name("192.0.2.5", "zen.example") == "5.2.0.192.zen.example"
    assert query_name("::ffff:192.0.2.5", "zen.example") == "5.2.0.192.zen.example"
    v6 = query_name("2001:db8::1", "zen.example")
    assert v6.startswith("1.0.0.0.") and v6.endswith(".8.b.d.0.1.0.0.2.zen.example")
    assert len(v6.split(".")) == 32 + 2


def test_weighted_score_with_allowlist_offset() -> None:
    sites = parse_sites(["zen.example*3", "bl.example=127.0.0.[2..11]*2", "wl.example=127.0.[0..255].[1..3]*-5"])
    assert score(sites, {"zen.example": ["127.0.0.4"]}).total == 3
    both = score(sites, {"zen.example": ["127.0.0.4"], "bl.example": ["127.0.0.3", "127.0.0.10"]})
    assert both.total == 5 and both.hits == ["zen.example*3 (127.0.0.4)", "bl.example*2 (127.0.0.3)"]
    assert score(sites, {"zen.example": ["127.0.0.4"], "wl.example": ["127.0.10.2"]}).total == -2
    assert score(sites, {"bl.example": ["127.0.0.1"]}).total == 0  # outside the filter


def test_error_codes_never_count() -> None:
    assert is_error_code("127.255.255.254") and not is_error_code("127.0.0.2")
    result = score(parse_sites(["zen.example*3"]), {"zen.example": ["127.255.255.254"]})
    assert result.total == 0 and result.ignored == ["zen.example: 127.255.255.254"]


@pytest.mark.parametrize("text", ["zen.spamhaus.org*3", "bl.example=127.0.0.[2..11]*2",
                                  "wl.example=127.0.[0..255].[1..3]*-5", "bl.example=127.0.0.[9..2]",
                                  "bl.example=127.0.0.300", "bl.example=127.0.0*2",
                                  "nodots", "bl.example*x"])
def test_config_accepts_exactly_what_the_mx_parses(text: str) -> None:
    from dovetail.config import ConfigError, validate

    try:
        parse_site(text)
        mx_ok = True
    except ValueError:
        mx_ok = False
    try:
        validate("mx.screen.dnsbl_sites", [text])
        config_ok = True
    except (ConfigError, ValueError):
        config_ok = False
    assert config_ok == mx_ok
