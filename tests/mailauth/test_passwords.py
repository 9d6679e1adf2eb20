"""Password schemes checked against hashes made by a real `doveadm pw`."""

from __future__ import annotations

import asyncio
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dovetail.mailauth.passwords import (
    VerifyCache,
    hash_password,
    parse_passwd_line,
    verify_async,
    verify_password,
)

from ..support import require_tool

DOVECOT_SCHEMES = ["ARGON2ID", "BLF-CRYPT", "SHA512-CRYPT", "SSHA512", "PLAIN", "SHA256-CRYPT", "SSHA256"]


def doveadm_pw(scheme: str, password: str) -> str:
    require_tool("doveadm")
    out = subprocess.run(["doveadm", "pw", "-s", scheme, "-p", password], capture_output=True, text=True,
                         timeout=60, check=True)
    return out.stdout.strip()


@pytest.mark.parametrize("scheme", DOVECOT_SCHEMES)
def test_verifies_doveadm_hashes(scheme: str) -> None:
    stored = doveadm_pw(scheme, "s3cret pässword")
    assert stored.startswith("{" + scheme + "}")
    assert verify_password(stored, "s3cret pässword")
    assert not verify_password(stored, "s3cret passwort")
    assert not verify_password(stored, "")


def test_our_argon2id_hash_is_what_dovecot_writes() -> None:
    stored = hash_password("hunter2")
    assert stored.startswith("{ARGON2ID}$argon2id$")
    assert verify_password(stored, "hunter2") and not verify_password(stored, "hunter3")
    require_tool("doveadm")
    # Dovecot itself accepts our hash
    out = subprocess.run(["doveadm", "pw", "-t", stored, "-p", "hunter2"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and "verified" in out.stdout + out.stderr


@pytest.mark.parametrize("stored", [None, "", "{NOPE}abc", "no-prefix", "{SSHA512}!!!", "{ARGON2ID}garbage",
                                    "{BLF-CRYPT}$2y$garbage", "{SHA512-CRYPT}$6$x"])
def test_unusable_hashes_never_verify(stored: str | None) -> None:
    assert verify_password(stored, "anything") is False


def test_cache_remembers_only_successes() -> None:
    cache = VerifyCache()
    stored = hash_password("pw")
    assert asyncio.run(verify_async(stored, "pw", cache))
    assert asyncio.run(verify_async(stored, "pw", cache))
    assert not asyncio.run(verify_async(stored, "wrong", cache))


def test_passwd_line_parsing() -> None:
    assert parse_passwd_line("bob@x.example:{PLAIN}pw::::::") == ("bob@x.example", "{PLAIN}pw")
    assert parse_passwd_line("# comment") is None
    assert parse_passwd_line("   ") is None
    with pytest.raises(ValueError):
        parse_passwd_line("nocolon")


@settings(max_examples=50, deadline=None)
@given(st.text(max_size=40))
def test_plain_scheme_roundtrip(password: str) -> None:
    assert verify_password("{PLAIN}" + password, password)
