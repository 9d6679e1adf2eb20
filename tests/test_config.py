"""``server.hostname``: its default is this machine's name, and a name the world cannot use is named as such."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from dovetail import config


@pytest.mark.parametrize(("fqdn", "hostname", "expected"), [
    ("mx1.example.net", "mx1", "mx1.example.net"),
    ("localhost", "vm", "vm"),  # /etc/hosts: 127.0.0.1 localhost vm
    ("localhost.localdomain", "box.example.org", "box.example.org"),
    ("localhost", "", "localhost"),
])
def test_default_is_the_fqdn_else_the_host_name(monkeypatch: pytest.MonkeyPatch, fqdn: str, hostname: str,
                                                  expected: str) -> None:
    monkeypatch.setattr(socket, "getfqdn", lambda name="": fqdn)
    monkeypatch.setattr(socket, "gethostname", lambda: hostname)
    assert config.machine_hostname() == expected


def test_load_resolves_the_default_and_keeps_an_explicit_name(tmp_path: Path) -> None:
    (tmp_path / config.CONFIG_NAME).write_text(config.default_file_text())
    cfg = config.load(tmp_path)
    assert cfg["server.hostname"] == cfg.hostname == config.machine_hostname() != ""
    assert "server.hostname" not in cfg.explicit
    config.set_value(tmp_path, "server.hostname", "mail.example.com")
    assert config.load(tmp_path).hostname == "mail.example.com"


@pytest.mark.parametrize(("name", "why"), [("localhost", "loopback"), ("LOCALHOST.localdomain", "loopback"),
                                           ("vm", "no dot"), ("vm.", "no dot")])
def test_warning_for_a_name_the_world_cannot_use(name: str, why: str) -> None:
    warning = config.hostname_warning(name)
    assert warning is not None and why in warning and repr(name) in warning
    assert "greeting" in warning and "HELO" in warning and "MX/SPF" in warning
    assert "dovetail config set server.hostname=mail.example.com" in warning


def test_no_warning_for_a_dotted_name() -> None:
    assert config.hostname_warning("mail.example.com") is None
