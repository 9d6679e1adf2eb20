"""``web.public_url`` and ``web.unsubscribe_link_lifetime``: what they accept, and a clear refusal (exit 2,
file untouched) of anything else."""

from __future__ import annotations

from pathlib import Path

import pytest

from dovetail import config
from dovetail.outbound.unsubscribe import one_click_off_reason, one_click_url

from .test_cli import ok, run


@pytest.mark.parametrize(("raw", "stored"), [
    ("https://mail.example.com", "https://mail.example.com"),
    ("https://mail.example.com/", "https://mail.example.com"),
    ("https://example.com:8443/mail/", "https://example.com:8443/mail"),
    ("http://127.0.0.1:8025", "http://127.0.0.1:8025"),
    ("", ""),
])
def test_public_url_accepted(raw: str, stored: str) -> None:
    assert config.validate("web.public_url", raw) == stored


@pytest.mark.parametrize(("raw", "why"), [
    ("mail.example.com", "https://"),
    ("ftp://mail.example.com", "https://"),
    ("https://", "https://"),
    ("https://mail.example.com/?list=1", "no query"),
    ("https://mail.example.com/#top", "no query or fragment"),
    ("https://user:pw@mail.example.com", "no user name"),
    ("https://mail.example.com:99999", "not a URL"),
])
def test_public_url_refused(raw: str, why: str) -> None:
    with pytest.raises(config.ConfigError) as refused:
        config.validate("web.public_url", raw)
    assert why in str(refused.value) and "web.public_url" in str(refused.value)


def test_one_click_url_and_why_it_is_off() -> None:
    assert one_click_url("https://example.com/mail", "tok") == "https://example.com/mail/unsubscribe/tok"
    assert "web.public_url is not set" in (one_click_off_reason({"web.public_url": ""}) or "")
    assert "not https" in (one_click_off_reason({"web.public_url": "http://127.0.0.1:8025"}) or "")
    assert one_click_off_reason({"web.public_url": "https://mail.example.com"}) is None


def test_config_set_refuses_a_bad_url_or_lifetime_and_saves_nothing(tmp_path: Path) -> None:
    root = tmp_path / "d"
    ok(root, "init")
    before = (root / "dovetail.toml").read_text()
    for setting, why in (("web.public_url=https://mail.example.com/?a=b", "no query"),
                         ("web.unsubscribe_link_lifetime=7d", "at least 30d")):
        bad = run(root, "config", "set", setting)
        assert bad.returncode == 2 and why in bad.stderr and "Traceback" not in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1
    assert (root / "dovetail.toml").read_text() == before
    ok(root, "config", "set", "web.public_url=https://mail.example.com/", "web.unsubscribe_link_lifetime=90d")
    shown = ok(root, "config", "show")
    assert 'web.public_url = "https://mail.example.com"' in shown
    assert "web.unsubscribe_link_lifetime = 7776000.0" in shown
