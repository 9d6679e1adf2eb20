"""Credentials sealed at rest: round trips, purposes, keys, tampering, stored rows and the CLI."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from dovetail.sealing import KEY_RELPATH, PREFIX, Sealer, SealError, is_sealed, load_key
from tests import clirun

SEALER = Sealer(bytes(range(32)))


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200))
def test_any_text_comes_back(value: str) -> None:
    sealed = SEALER.seal(value, "relay secret")
    assert is_sealed(sealed) and (len(value) < 12 or value not in sealed)
    assert SEALER.open(sealed, "relay secret") == value


def test_purpose_key_and_tampering_are_checked() -> None:
    sealed = SEALER.seal("hunter2", "relay secret")
    assert SEALER.seal("hunter2", "relay secret") != sealed  # a fresh nonce each time
    with pytest.raises(SealError):
        SEALER.open(sealed, "imap source password")
    with pytest.raises(SealError):
        Sealer(bytes(32)).open(sealed, "relay secret")
    flipped = sealed[:-4] + ("AAAA" if not sealed.endswith("AAAA") else "BBBB")
    with pytest.raises(SealError):
        SEALER.open(flipped, "relay secret")
    with pytest.raises(SealError):
        SEALER.open(PREFIX + "not base64!", "relay secret")
    assert SEALER.open("written-before-sealing", "relay secret") == "written-before-sealing"
    assert SEALER.open(None, "relay secret") is None


def test_the_key_is_made_once_with_mode_0600(tmp_path: Path) -> None:
    first = load_key(tmp_path / KEY_RELPATH)
    assert load_key(tmp_path / KEY_RELPATH) == first and len(first) == 32
    assert stat.S_IMODE(os.stat(tmp_path / KEY_RELPATH).st_mode) == 0o600
    assert stat.S_IMODE(os.stat((tmp_path / KEY_RELPATH).parent).st_mode) == 0o700


def test_cli_stores_relay_secrets_and_imap_passwords_sealed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {**os.environ, "COLUMNS": "200"}

    def dovetail(*args: str, stdin: str | None = None) -> str:
        out = clirun.run(["--data-dir", str(data), *args], env=env, input=stdin, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout

    dovetail("init")
    dovetail("tenant", "add", "acme")
    dovetail("transport", "set", "tenant", "acme", "--relay", "relay.example:587", "--user", "u",
             "--secret", "pa55w0rd", "--no-dns-check")
    dovetail("replies", "imap", "add", "--tenant", "acme", "inbox", "--host", "imap.example", "--user", "u",
             stdin="imapPa55\n")
    engine = sa.create_engine(f"sqlite:///{data / 'dovetail.db'}")
    with engine.connect() as conn:
        secret = conn.execute(sa.text("SELECT secret FROM transports")).scalar_one()
        password = conn.execute(sa.text("SELECT password FROM imap_accounts")).scalar_one()
    engine.dispose()
    assert is_sealed(secret) and "pa55w0rd" not in secret
    assert is_sealed(password) and "imapPa55" not in password
    sealer = Sealer.for_data_dir(data)
    assert sealer.open(secret, "relay secret") == "pa55w0rd"
    assert sealer.open(password, "imap source password") == "imapPa55"
