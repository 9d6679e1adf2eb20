"""lmtpd's keys: off by default, a TCP or unix listener, bad addresses refused before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from dovetail import config
from dovetail.master.services import service_specs


def _data_dir(tmp_path: Path) -> Path:
    (tmp_path / config.CONFIG_NAME).write_text(config.default_file_text())
    return tmp_path


def test_lmtpd_is_off_until_listen_lmtp_is_set(tmp_path: Path) -> None:
    data = _data_dir(tmp_path)
    assert service_specs(config.load(data))["lmtpd"].enabled is False
    config.set_value(data, "listen.lmtp", "unix:/run/dovetail/lmtp")
    spec = service_specs(config.load(data))["lmtpd"]
    assert spec.enabled and spec.listen == ("unix:/run/dovetail/lmtp",)
    config.set_value(data, "listen.lmtp", "127.0.0.1:24")
    assert service_specs(config.load(data))["lmtpd"].listen == ("127.0.0.1:24",)
    assert config.load(data)["lmtp.allowed_networks"] == ["127.0.0.0/8", "::1/128"]


@pytest.mark.parametrize("bad", ["unix:relative/lmtp", "127.0.0.1", "unix:/" + "x" * 120])
def test_bad_listen_addresses_are_refused_and_nothing_is_written(tmp_path: Path, bad: str) -> None:
    data = _data_dir(tmp_path)
    before = (data / config.CONFIG_NAME).read_text()
    with pytest.raises(config.ConfigError, match="listen.lmtp"):
        config.set_value(data, "listen.lmtp", bad)
    assert (data / config.CONFIG_NAME).read_text() == before


def test_unix_sockets_are_for_lmtpd_only(tmp_path: Path) -> None:
    data = _data_dir(tmp_path)
    (data / config.CONFIG_NAME).write_text(config.default_file_text() + '\n[services.imapd]\nlisten = "unix:/x"\n')
    with pytest.raises(config.ConfigError, match="services.imapd.listen"):
        service_specs(config.load(data))
