"""What the admin pages show: webhook event lists, times with their zone, thread titles."""

from __future__ import annotations

import re

import pytest

from dovetail.replies.pipeline import Source
from dovetail.replies.service import RepliesService

from .conftest import ADMIN_EMAIL, ADMIN_PASSWORD, WebEnv

SHOWN_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [A-Za-z][\w+-]*")


@pytest.fixture
def admin(web_sqlite: WebEnv) -> WebEnv:
    c = web_sqlite.client
    c.get("/login")
    r = c.post("/login", data={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "next": "/",
                               "csrf": c.cookies.get("dovetail_login_csrf")}, follow_redirects=False)
    assert r.status_code == 303
    web_sqlite.directory.tenant_add("acme")
    return web_sqlite


def _cells(html: str) -> list[str]:
    return [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", html, re.S)]


def test_webhook_events_read_as_words(admin: WebEnv) -> None:
    svc = RepliesService.open(admin.engine, admin.cfg.data_dir)
    svc.outbox.add_endpoint("acme", "https://hooks.example/all")
    svc.outbox.add_endpoint("acme", "https://hooks.example/some", ["reply.received", "bounce.hard"])
    page = admin.client.get("/webhooks").text
    assert "[&#39;" not in page and "['" not in page
    cells = _cells(page)
    assert "all events" in cells and "reply.received, bounce.hard" in cells


def test_token_times_are_to_the_second_with_a_zone(admin: WebEnv) -> None:
    assert admin.client.get("/api/v1/tenants", headers=admin.bearer(admin.admin_token)).status_code == 200
    page = admin.client.get("/tokens").text
    times = [c for c in _cells(page) if re.match(r"\d{4}-", c)]
    assert len(times) >= 2, times  # created and last used
    assert all(SHOWN_TIME.fullmatch(t) for t in times), times
    assert not re.search(r"\d\d:\d\d:\d\d\.\d+", page)  # no microseconds


def test_a_thread_is_titled_by_its_first_reply_when_the_message_had_no_subject(admin: WebEnv) -> None:
    svc = RepliesService.open(admin.engine, admin.cfg.data_dir)
    campaign = svc.registry.create_campaign("acme", "spring")
    svc.registry.register_outbound("acme", campaign.id, message_id="<out-1@acme.example>",
                                   recipient="carl@ext.example")  # as `campaigns register` without --subject
    reply = svc.process_message(b"From: carl@ext.example\r\nTo: bob@acme.example\r\nSubject: Re: Spring offer\r\n"
                                b"Message-ID: <r1@ext.example>\r\nIn-Reply-To: <out-1@acme.example>\r\n\r\nYes!\r\n",
                                Source("acme", "test"))
    page = admin.client.get(f"/threads/{reply.thread_id}").text
    title = re.search(r"<h1>(.*?)</h1>", page, re.S).group(1)
    assert title.startswith("Spring offer ") and "(no subject)" not in page
    assert "Spring offer" in admin.client.get(f"/campaigns/{campaign.id}").text


def test_a_thread_keeps_the_subject_of_the_campaign_message(admin: WebEnv) -> None:
    svc = RepliesService.open(admin.engine, admin.cfg.data_dir)
    campaign = svc.registry.create_campaign("acme", "autumn")
    svc.registry.register_outbound("acme", campaign.id, message_id="<out-2@acme.example>",
                                   recipient="dora@ext.example", subject="Autumn prices")
    reply = svc.process_message(b"From: dora@ext.example\r\nTo: bob@acme.example\r\nSubject: Re: something else\r\n"
                                b"Message-ID: <r2@ext.example>\r\nIn-Reply-To: <out-2@acme.example>\r\n\r\nOk\r\n",
                                Source("acme", "test"))
    page = admin.client.get(f"/threads/{reply.thread_id}").text
    assert re.search(r"<h1>Autumn prices ", page)


def _badges(page: str) -> list[tuple[str, str]]:
    """(tone, text) of each sender-authentication badge on a page."""
    return [(tone, " ".join(re.sub(r"<[^>]+>", " ", text).split()))
            for tone, text in re.findall(r'<span class="badge auth-(\w+)"[^>]*>(.*?)</span>', page, re.S)]


def test_reply_thread_shows_the_verdicts_of_our_header_only(admin: WebEnv) -> None:
    svc = RepliesService.open(admin.engine, admin.cfg.data_dir)
    campaign = svc.registry.create_campaign("acme", "winter")
    svc.registry.register_outbound("acme", campaign.id, message_id="<out-3@acme.example>",
                                   recipient="erin@ext.example", subject="Winter")
    ours = admin.cfg.hostname
    reply = svc.process_message(
        f"Authentication-Results: {ours};\r\n\tspf=softfail smtp.mailfrom=erin@ext.example;\r\n"
        "\tdkim=pass header.d=ext.example header.s=s1;\r\n"
        "\tdmarc=fail (p=reject dis=none) header.from=ext.example policy.dmarc=reject policy.override=arc;\r\n"
        "\tarc=pass header.oldest-pass=0 smtp.remote-ip=192.0.2.1\r\n"
        "Authentication-Results: forger.example; dkim=pass header.d=bank.example; dmarc=pass\r\n"
        "From: erin@ext.example\r\nTo: bob@acme.example\r\nSubject: Re: Winter\r\n"
        "Message-ID: <r3@ext.example>\r\nIn-Reply-To: <out-3@acme.example>\r\n\r\nSure\r\n".encode(),
        Source("acme", "test"))
    page = admin.client.get(f"/threads/{reply.thread_id}").text
    assert _badges(page) == [("warn", "SPF softfail"), ("pass", "DKIM pass d=ext.example"),
                             ("fail", "DMARC fail from=ext.example p=reject; policy overridden (arc)"),
                             ("pass", "ARC pass")]
    assert "bank.example" not in page  # the other server's header is no verdict of ours


def test_reply_with_only_a_forged_header_shows_no_verdict(admin: WebEnv) -> None:
    svc = RepliesService.open(admin.engine, admin.cfg.data_dir)
    campaign = svc.registry.create_campaign("acme", "summer")
    svc.registry.register_outbound("acme", campaign.id, message_id="<out-4@acme.example>",
                                   recipient="finn@ext.example", subject="Summer")
    reply = svc.process_message(
        b"Authentication-Results: forger.example; spf=pass; dkim=pass header.d=bank.example; dmarc=pass\r\n"
        b"From: finn@ext.example\r\nTo: bob@acme.example\r\nSubject: Re: Summer\r\n"
        b"Message-ID: <r4@ext.example>\r\nIn-Reply-To: <out-4@acme.example>\r\n\r\nOk\r\n", Source("acme", "test"))
    page = admin.client.get(f"/threads/{reply.thread_id}").text
    assert _badges(page) == [] and "No sender-authentication verdict of ours." in page


def test_a_reply_flagged_as_spam_and_delivered_to_junk_says_so_in_its_thread(admin: WebEnv) -> None:
    svc = RepliesService.open(admin.engine, admin.cfg.data_dir)
    ours = admin.cfg.hostname
    raw = (f"From: eve@ext.example\r\nTo: bob@acme.example\r\nSubject: Cheap watches\r\nMessage-ID: <s1@ext.example>"
           f"\r\nAuthentication-Results: {ours};\r\n\tspam=yes (rspamd score=9.00 action=add_header)\r\n\r\nBuy!\r\n")
    reply = svc.process_message(raw.encode(), Source("acme", "local:bob@acme.example", item="1", folder="Junk"))
    assert reply.event_type == "reply.spam"
    page = admin.client.get(f"/threads/{reply.thread_id}").text
    assert '<span class="badge kind-spam">spam</span>' in page and "delivered to Junk" in page
