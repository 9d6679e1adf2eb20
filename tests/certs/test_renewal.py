"""Renewal decisions and backoff against a CA that cannot be reached (a closed loopback port), the DNS-01
hook as a real command, and the names ``acme.auto`` wants."""

from __future__ import annotations

import datetime as dt
import socket
import stat
import time
from pathlib import Path

import pytest

from dovetail.certs.challenges import ChallengeError, run_dns_hook
from dovetail.certs.order import AcmeOrders, AcmeSettings, OrderFailed
from dovetail.certs.renew import Renewer, backoff, wanted_names
from dovetail.certs.store import CertError, CertStore, normalize_name

from .helpers import make_pair


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def renewer(tmp_path: Path) -> Renewer:
    store = CertStore(tmp_path / "tls")
    settings = AcmeSettings(directory_url=f"https://127.0.0.1:{closed_port()}/dir")
    return Renewer(store, AcmeOrders(store, settings), "dns-01", retry_base=60, retry_max=600)


def test_due_at_two_thirds_of_lifetime(renewer: Renewer) -> None:
    renewer.store.save("young.example", *make_pair(["young.example"], days=90, age=59))
    renewer.store.save("old.example", *make_pair(["old.example"], days=90, age=61))
    renewer.store.save("manual.example", *make_pair(["manual.example"], days=90, age=80), source="manual")
    assert [c.id for c in renewer.due()] == ["old.example"]


def test_ca_down_backs_off_and_doubles_keeping_the_certificate(renewer: Renewer) -> None:
    chain, key = make_pair(["old.example"], days=90, age=61)
    renewer.store.save("old.example", chain, key)
    (first,) = renewer.renew()
    assert not first.ok and "the CA cannot be reached" in first.message
    state = renewer.store.state("old.example")
    assert state.failures == 1 and 55 < state.next_try - time.time() <= 60
    assert renewer.due() == []  # in backoff: the periodic pass leaves it alone
    assert "1 failed attempt(s)" in state.status(renewer.store.get("old.example"))
    (second,) = renewer.renew(force=True)
    assert not second.ok and renewer.store.state("old.example").failures == 2
    assert 115 < renewer.store.state("old.example").next_try - time.time() <= 120
    assert renewer.store.chain_path("old.example").read_bytes() == chain  # the old certificate stays
    assert [backoff(n, 60, 600) for n in (1, 2, 3, 4, 5, 9)] == [60, 120, 240, 480, 600, 600]


def test_wildcard_needs_dns_01(renewer: Renewer) -> None:
    with pytest.raises(OrderFailed, match="wildcard name needs the dns-01"):
        renewer.orders.issue(["*.example.com"], "http-01")


def test_dns_hook_is_called_and_its_failure_is_reported(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    hook = tmp_path / "hook.sh"
    hook.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n[ "$3" != bad ] || {{ echo "zone is locked" >&2; exit 3; }}\n')
    hook.chmod(hook.stat().st_mode | stat.S_IXUSR)
    run_dns_hook(str(hook), "add", "example.com", "v4lue")
    run_dns_hook(str(hook), "remove", "example.com", "v4lue")
    assert calls.read_text().splitlines() == ["add example.com v4lue", "remove example.com v4lue"]
    with pytest.raises(ChallengeError, match="dns-01 hook add example.com failed: zone is locked"):
        run_dns_hook(str(hook), "add", "example.com", "bad")
    with pytest.raises(ChallengeError, match="needs acme.dns01_hook"):
        run_dns_hook("", "add", "example.com", "v")


def test_names() -> None:
    assert normalize_name("Mail.Example.COM.") == "mail.example.com"
    assert normalize_name("*.example.com") == "*.example.com"
    assert normalize_name("bücher.example") == "xn--bcher-kva.example"
    for bad in ("localhost", "a..b", "-x.example", "x_y.example", "a.*.example"):
        with pytest.raises(CertError):
            normalize_name(bad)
    assert wanted_names("mx.example.net", ["a.example"], autoconfig=True) == [
        ["mx.example.net"], ["mail.a.example", "mta-sts.a.example", "autoconfig.a.example"]]
    assert wanted_names("localhost", ["a.example"], autoconfig=False) == [["mail.a.example", "mta-sts.a.example"]]


def test_store_files_are_private(renewer: Renewer) -> None:
    info = renewer.store.save("a.example", *make_pair(["a.example"]))
    assert info.days_left(dt.datetime.now(dt.UTC)) > 89
    for path in (renewer.store.key_path("a.example"), renewer.store.chain_path("a.example")):
        assert path.stat().st_mode & 0o777 == 0o600
    assert renewer.store.certs_dir.stat().st_mode & 0o777 == 0o700
