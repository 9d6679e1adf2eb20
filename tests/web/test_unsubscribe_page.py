"""``/unsubscribe/<token>`` in the web app: a page that changes nothing, a POST that needs the token and
the RFC 8058 body but no session or CSRF token, and a CSRF check that still guards every other form."""

from __future__ import annotations

import re

from dovetail.replies import tokens
from dovetail.replies.outbound_bridge import OutboundBridge
from dovetail.replies.service import RepliesService

from .conftest import ADMIN_EMAIL, ADMIN_PASSWORD, WebEnv

CARL = "carl@ext.example"


def mint(web: WebEnv, **kw: int) -> tuple[RepliesService, str]:
    """A campaign message to Carl registered as the send API does, and its one-click token."""
    web.directory.tenant_add("acme")
    service = RepliesService.open(web.engine, web.cfg.data_dir)  # type: ignore[arg-type]
    bridge = OutboundBridge(service)
    reply_token = bridge.new_reply_token("acme")
    bridge.register_outbound(tenant="acme", message_id="<m1@acme.example>", sender="news@acme.example",
                             recipients=[CARL], campaign="spring", contact=None, tags=[], reply_token=reply_token)
    if kw:
        ob = service.registry.by_token("acme", reply_token)
        assert ob is not None
        return service, tokens.new_unsubscribe_token(service.registry.secret, ob.tenant_id, reply_token, CARL, **kw)
    return service, bridge.unsubscribe_token("acme", reply_token, CARL)


def test_the_page_confirms_and_only_its_post_unsubscribes(web: WebEnv) -> None:
    service, token = mint(web)
    c = web.client
    for _ in range(2):  # opened twice (a scanner, then the person): still nothing done
        page = c.get(f"/unsubscribe/{token}", headers={"Accept": "text/html"})
        assert page.status_code == 200 and CARL in page.text and "spring" in page.text
        assert page.headers["cache-control"] == "no-store" and "noindex" in page.headers["x-robots-tag"]
    assert not service.queries.is_suppressed("acme", CARL)
    form = re.search(r'<form method="post" action="">(.*?)</form>', page.text, re.S).group(1)
    fields = dict(re.findall(r'name="([^"]+)" value="([^"]+)"', form))
    assert fields == {"List-Unsubscribe": "One-Click"}  # the button posts exactly the RFC 8058 body
    done = c.post(f"/unsubscribe/{token}", data=fields, headers={"Accept": "text/html"}, follow_redirects=False)
    assert done.status_code == 200 and "is unsubscribed" in done.text
    assert service.queries.is_suppressed("acme", CARL)


def test_no_csrf_token_needed_there_and_still_needed_everywhere_else(web: WebEnv) -> None:
    service, token = mint(web)
    c = web.client
    c.get("/login")
    c.post("/login", data={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "next": "/",
                           "csrf": c.cookies.get("dovetail_login_csrf")}, follow_redirects=False)
    # A logged-in browser posting a form without a CSRF token: refused for the admin UI...
    assert c.post("/tenants", data={"name": "globex"}, follow_redirects=False).status_code == 403
    # ...and accepted at the unsubscribe link, where the token is the credential and no session is read.
    r = c.post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"})
    assert r.status_code == 200 and r.json() == {"unsubscribed": True}
    assert service.queries.is_suppressed("acme", CARL)


def test_an_expired_link_shows_why_and_unsubscribes_nobody(web: WebEnv) -> None:
    service, token = mint(web, issued_day=tokens.today() - 366)  # the default lifetime is 365 days
    page = web.client.get(f"/unsubscribe/{token}", headers={"Accept": "text/html"})
    assert page.status_code == 410 and "expired" in page.text and "<form" not in page.text
    r = web.client.post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"})
    assert r.status_code == 410 and r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["status"] == 410 and "expired" in r.json()["detail"]
    assert not service.queries.is_suppressed("acme", CARL)
