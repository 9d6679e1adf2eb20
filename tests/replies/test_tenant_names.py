"""The replies engine names tenants and reply inboxes as the directory does: ``ACME`` is tenant ``acme``, and
a reply inbox on an internationalised domain is the A-label address deliveries use."""

from __future__ import annotations

from pathlib import Path

import pytest

from dovetail.replies.registry import RegistryError
from dovetail.replies.service import RepliesService
from dovetail.replies.sources.imap import ImapAccounts
from dovetail.replies.sources.local import LocalHook

from .mails import reply

IDN = "xn--bcher-kva.example"  # bücher.example


def test_registry_takes_the_tenant_in_any_case(service: RepliesService) -> None:
    camp = service.registry.create_campaign("ACME", "Q1")
    assert [c.id for c in service.registry.campaigns("acme")] == [camp.id]
    assert service.registry.campaign("Acme", "Q1").id == camp.id
    assert service.registry.campaigns("other") == []
    ob = service.registry.register_outbound("Acme", "Q1", message_id="<a@acme.example>",
                                            recipient="anna@client.example")
    assert ob.campaign_id == camp.id
    with pytest.raises(RegistryError, match="unknown tenant"):
        service.registry.campaigns("nobody")


def test_reply_inbox_on_an_idn_domain_marked_in_any_case(service: RepliesService, tmp_path: Path) -> None:
    hook = LocalHook(service, cache_ttl=0)
    ob = service.registry.register_outbound("acme", None, message_id="<b@acme.example>",
                                            recipient="anna@client.example")
    hook.mark("ACME", "Replies@Bücher.Example")
    assert hook.inboxes("acme") == [f"replies@{IDN}"]
    assert hook.wants("acme", f"replies@{IDN}") and hook.wants("Acme", "REPLIES@bücher.example")
    assert not hook.wants("other", f"replies@{IDN}")
    maildir = tmp_path / "mail" / "acme" / IDN / "replies"
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True)
    (maildir / "new" / "1.M1.host").write_bytes(reply(in_reply_to="<b@acme.example>"))
    rec = hook.on_delivered("acme", f"replies@{IDN}", maildir, "1.M1.host")  # as the delivery agent names it
    assert rec is not None and rec.tenant == "acme" and rec.outbound_id == ob.id
    assert hook.unmark("Acme", "replies@BÜCHER.example")
    assert hook.inboxes("acme") == []
    with pytest.raises(RegistryError, match="not an address"):
        hook.mark("acme", "no-at-sign")


def test_imap_accounts_take_the_tenant_in_any_case(service: RepliesService) -> None:
    accounts = ImapAccounts(service.engine)
    made = accounts.add("ACME", "inbox", host="imap.example", username="u", password="p")
    assert made.tenant == "acme"
    accounts.add("other", "theirs", host="imap.example", username="v", password="q")
    assert [(a.id, a.tenant) for a in accounts.list("Acme")] == [(made.id, "acme")]
    assert sorted(a.tenant for a in accounts.list()) == ["acme", "other"]
    assert accounts.list("nobody") == []
