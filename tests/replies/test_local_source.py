"""The local hook: messages delivered to a reply inbox's Maildir go through the pipeline once."""

from __future__ import annotations

from pathlib import Path

import pytest

from dovetail.replies.service import RepliesService
from dovetail.replies.sources.local import LocalHook, delivered_file

from .mails import reply


def _deliver(maildir: Path, name: str, raw: bytes) -> None:
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    (maildir / "new" / name).write_bytes(raw)


def test_on_delivered(service: RepliesService, tmp_path: Path) -> None:
    hook = LocalHook(service, cache_ttl=0)
    ob = service.registry.register_outbound("acme", "Q1", message_id="<a@acme.example>",
                                            recipient="anna@client.example")
    maildir = tmp_path / "mail" / "acme" / "acme.example" / "replies"
    _deliver(maildir, "1.M1.host", reply(in_reply_to="<a@acme.example>"))
    assert hook.on_delivered("acme", "replies@acme.example", maildir, "1.M1.host") is None  # not marked yet
    hook.mark("acme", "Replies@acme.example")
    assert hook.inboxes("acme") == ["replies@acme.example"]
    assert not hook.wants("other", "replies@acme.example")
    rec = hook.on_delivered("acme", "replies@acme.example", maildir, "1.M1.host")
    assert rec is not None and rec.outbound_id == ob.id and not rec.duplicate
    # An IMAP client moved it to cur/ with flags; a retried hook call finds it and changes nothing.
    (maildir / "new" / "1.M1.host").rename(maildir / "cur" / "1.M1.host:2,S")
    again = hook.on_delivered("acme", "replies@acme.example", maildir, "1.M1.host")
    assert again is not None and again.duplicate and again.id == rec.id
    with pytest.raises(ValueError):
        hook.on_delivered("acme", "replies@acme.example", maildir, "..")
    assert hook.on_delivered("acme", "replies@acme.example", maildir, "../../../etc/passwd") is None
    assert hook.unmark("acme", "replies@acme.example")
    assert hook.on_delivered("acme", "replies@acme.example", maildir, "1.M1.host") is None


def test_delivered_file_derives_the_tenant(service: RepliesService, tmp_path: Path) -> None:
    hook = LocalHook(service, cache_ttl=0)
    hook.mark("acme", "replies@acme.example")
    mail = tmp_path / "mail"
    maildir = mail / "acme" / "acme.example" / "replies"
    _deliver(maildir, "2.M2.host", reply(message_id="<df@c>"))
    rec = delivered_file(hook, mail, "replies@acme.example", maildir / "new" / "2.M2.host")
    assert rec is not None and rec.tenant == "acme" and rec.message_id == "df@c"
    with pytest.raises(ValueError):
        delivered_file(hook, mail, "replies@acme.example", tmp_path / "elsewhere" / "new" / "x")


def test_a_tenants_replies_intake_is_consumed_without_marking(service: RepliesService, tmp_path: Path) -> None:
    """``reply+<token>@`` is routed to ``mail/<tenant>/_replies/``; the hook takes it as a reply inbox of
    that tenant only, and the token threads only when its MAC verifies for that tenant."""
    mail = tmp_path / "mail"
    hook = LocalHook(service, cache_ttl=0, mail_root=mail)
    ob = service.registry.register_outbound("acme", "Q1", message_id="<t@acme.example>",
                                            recipient="anna@client.example")
    intake = mail / "acme" / "_replies"
    to = f"reply+{ob.reply_token}@acme.example"
    _deliver(intake, "3.M3.host", reply(to=to, message_id="<t1@client.example>"))
    assert hook.inboxes("acme") == [] and hook.wants("acme", to, intake)
    assert not hook.wants("other", to, intake)  # acme's intake is not other's
    assert not hook.wants("acme", to, mail / "acme" / "acme.example" / "_replies")  # a mailbox, not the intake
    rec = hook.on_delivered("acme", to, intake, "3.M3.host")
    assert rec is not None and rec.outbound_id == ob.id and rec.match_method == "token"
    # The same token at another tenant's domain lands in that tenant's intake and does not verify there.
    other = mail / "other" / "_replies"
    _deliver(other, "4.M4.host", reply(to=f"reply+{ob.reply_token}@other.example", message_id="<t2@client.example>"))
    stray = hook.on_delivered("other", f"reply+{ob.reply_token}@other.example", other, "4.M4.host")
    assert stray is not None and stray.tenant == "other" and stray.outbound_id is None
    assert stray.match_method == "none" and stray.event_type == "reply.unmatched"
    assert LocalHook(service, cache_ttl=0).on_delivered("acme", to, intake, "3.M3.host") is None  # no mail root
