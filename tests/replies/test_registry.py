from __future__ import annotations

import datetime as dt
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dovetail.replies import tokens
from dovetail.replies.registry import RegistryError
from dovetail.replies.service import RepliesService


def test_secret_created_once_with_0600(tmp_path: Path) -> None:
    key = tokens.load_secret(tmp_path)
    path = tmp_path / "secrets" / "reply_token.key"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert len(key) == 32
    assert tokens.load_secret(tmp_path) == key


def test_token_roundtrip_and_tamper() -> None:
    secret = b"k" * 32
    token = tokens.new_token(secret, 1)
    assert len(token) == tokens.TOKEN_LENGTH and token == token.lower()
    assert tokens.verify_token(secret, 1, token)
    assert tokens.verify_token(secret, 1, token.upper())  # MTAs may change case
    assert not tokens.verify_token(secret, 2, token)  # bound to the tenant
    assert not tokens.verify_token(b"x" * 32, 1, token)
    for i in range(len(token)):
        flipped = token[:i] + ("a" if token[i] != "a" else "b") + token[i + 1:]
        assert not tokens.verify_token(secret, 1, flipped)
    assert tokens.find_tokens(tokens.reply_address(token, "in.acme.example")) == [token]


@settings(max_examples=200)
@given(st.text(max_size=80))
def test_verify_token_never_raises(text: str) -> None:
    assert tokens.verify_token(b"k" * 32, 1, text) in (True, False)


def test_register_and_lookup(service: RepliesService) -> None:
    reg = service.registry
    camp = reg.create_campaign("acme", "Q1 outreach", window_days=30)
    sent = dt.datetime(2026, 1, 2, 9, 0, tzinfo=dt.UTC)
    ob = reg.register_outbound("acme", camp.id, message_id="<m1@acme.example>", recipient="Anna@Client.example",
                               step=1, subject="Quick question", sent_at=sent, contact="crm-42")
    assert ob.message_id == "m1@acme.example" and ob.recipient == "anna@client.example"
    assert ob.campaign_id == camp.id and ob.sent_at == sent.replace(tzinfo=None)
    assert reg.by_message_id("acme", "<m1@acme.example>") == ob
    assert reg.by_message_id("other", "<m1@acme.example>") is None  # tenants are walls
    assert reg.by_token("acme", ob.reply_token) == ob
    assert reg.by_token("other", ob.reply_token) is None
    assert reg.set_relay_ids("acme", "m1@acme.example", relay_message_id="<0100abc@email.amazonses.com>",
                             relay_queue_id="Q123")
    assert reg.by_message_id("acme", "0100abc@email.amazonses.com").id == ob.id
    # registering the same Message-ID and recipient again is idempotent
    assert reg.register_outbound("acme", camp.id, message_id="m1@acme.example", recipient="anna@client.example"
                                 ).id == ob.id


def test_one_message_to_several_recipients_with_a_foreign_token(service: RepliesService) -> None:
    reg = service.registry
    rows = [reg.register_outbound("acme", "spring", message_id="<multi@acme.example>", recipient=r,
                                  reply_token="abcdefgh23456712", foreign_token=True)
            for r in ("a@x.example", "b@x.example")]
    assert rows[0].id != rows[1].id
    assert reg.by_token("acme", "ABCDEFGH23456712", contact="b@x.example").id == rows[1].id
    assert reg.by_message_id("acme", "multi@acme.example").recipient in ("a@x.example", "b@x.example")
    assert reg.by_token("other", "abcdefgh23456712") is None
    with pytest.raises(RegistryError):
        reg.register_outbound("acme", "spring", message_id="<m9@acme.example>", recipient="b@c.example",
                              reply_token="short", foreign_token=True)


def test_register_with_pre_minted_token_and_auto_campaign(service: RepliesService) -> None:
    reg = service.registry
    token = reg.new_reply_token("acme")
    ob = reg.register_outbound("acme", "spring", message_id="<m2@acme.example>", recipient="b@c.example",
                               reply_token=token)
    assert ob.reply_token == token
    assert [c.name for c in reg.campaigns("acme")] == ["spring"]
    forged = reg.new_reply_token("other")
    with pytest.raises(RegistryError):
        reg.register_outbound("acme", "spring", message_id="<m3@acme.example>", recipient="b@c.example",
                              reply_token=forged)
    with pytest.raises(RegistryError):
        reg.register_outbound("acme", "spring", message_id="no id", recipient="b@c.example")
    with pytest.raises(RegistryError):
        reg.create_campaign("acme", "spring")
