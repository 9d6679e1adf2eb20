"""Browser test against a real ``dovetail serve``: Playwright driving Debian's chromium through the whole story.

Log in, add a domain and a mailbox through the UI, send a message to it by SMTP and see it counted on the
dashboard, register a campaign message, send a reply by SMTP and find it, classified and stripped, in its
campaign thread. Saves screenshots of the dashboard and the campaign pages (to docs/screenshots/ with
UPDATE_SCREENSHOTS=1).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..master.harness import Master, cli, free_port, wait_for

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
ADMIN, PASSWORD = "ops@acme.example", "correct horse battery"
REPLY = ("From: Carl Client <carl@ext.example>\r\nTo: bob@acme.example\r\nSubject: Re: Spring offer\r\n"
         "Message-ID: <reply-1@ext.example>\r\nIn-Reply-To: <out-1@acme.example>\r\n"
         "References: <out-1@acme.example>\r\n\r\n"
         "Yes, send me the details.\r\n\r\nOn Mon, Bob wrote:\r\n> Spring offer inside\r\n")

if not Path(CHROMIUM).exists() and os.environ.get("CI") != "true":
    pytest.skip("chromium is not installed (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")


def ok(m: Master, *args: str) -> str:
    out = cli(m.data_dir, *args)
    assert out.returncode == 0, out.stderr
    return out.stdout


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Master, str]]:
    m = Master.create(tmp_path)
    ok(m, "admin", "add", ADMIN, "--password", PASSWORD)
    # Marked before the start: the delivery agent caches the reply inboxes for a moment.
    ok(m, "replies", "inbox", "add", "--tenant", "acme", "bob@acme.example")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    m.start("--http", f"127.0.0.1:{port}")
    try:
        wait_for(lambda: answers(f"{base}/login"), 30, "the web service")
        yield m, base
    finally:
        m.stop()
        m.cleanup()


def poll_page(page: Any, url: str, check: Any, what: str, timeout: float = 40.0) -> Any:
    """Load ``url`` until ``check(page)`` returns something true (the services flush every few seconds)."""
    def attempt() -> Any:
        page.goto(url)
        return check(page)

    return wait_for(attempt, timeout, what)


def flow_counts(page: Any) -> dict[str, int] | None:
    page.get_by_text("As numbers").click()
    table = page.locator("#flow table")
    if not table.is_visible():
        return None
    counts = {}
    for row in table.locator("tbody tr").all():
        counts[row.locator("th").inner_text().strip()] = int(row.locator("td").first.inner_text())
    return counts if counts.get("received", 0) >= 1 and counts.get("delivered", 0) >= 1 else None


def test_mail_and_reply_reach_the_ui(served: tuple[Master, str], shots: Path) -> None:
    m, base = served
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        page.goto(f"{base}/")
        assert page.url.startswith(f"{base}/login")
        page.fill("#email", ADMIN)
        page.fill("#password", PASSWORD)
        page.keyboard.press("Enter")
        page.wait_for_url(f"{base}/")

        page.get_by_role("navigation", name="Main").get_by_role("link", name="Tenants").click()
        page.get_by_role("link", name="acme", exact=True).click()
        page.fill("#d-name", "shop.example")
        page.get_by_role("button", name="Add domain").click()
        page.wait_for_url(f"{base}/domains/shop.example*")
        page.fill("#mb-local", "sales")
        page.fill("#mb-pw", "hunter2hunter2")
        page.get_by_role("button", name="Add mailbox").click()
        page.get_by_text("Mailbox sales@shop.example created.").wait_for()

        with m.smtp() as s:
            refused = s.sendmail("carl@ext.example", ["sales@shop.example"],
                                 "From: carl@ext.example\r\nTo: sales@shop.example\r\nSubject: Hello\r\n\r\nHi!\r\n")
        assert refused == {}
        counts = poll_page(page, f"{base}/", flow_counts, "received and delivered on the dashboard")
        assert counts["received"] >= 1 and counts["delivered"] >= 1 and counts["bounced"] == 0
        sales = m.data_dir / "mail" / "acme" / "shop.example" / "sales"
        assert [p for sub in ("new", "cur") for p in (sales / sub).glob("*")], "not in the new mailbox"

        ok(m, "campaigns", "add", "--tenant", "acme", "spring")
        ok(m, "campaigns", "register", "--tenant", "acme", "spring", "--message-id", "<out-1@acme.example>",
           "--recipient", "carl@ext.example", "--subject", "Spring offer")
        with m.smtp() as s:
            assert s.sendmail("carl@ext.example", ["bob@acme.example"], REPLY) == {}

        def replied(p: Any) -> bool:
            row = p.get_by_role("row").filter(has=p.get_by_role("link", name="spring", exact=True))
            return row.count() == 1 and row.locator("td").nth(3).inner_text().strip() == "1"

        poll_page(page, f"{base}/campaigns", replied, "the reply counted on the campaigns page")
        page.screenshot(path=str(shots / "campaigns.png"), full_page=True)

        page.get_by_role("link", name="spring", exact=True).click()
        page.wait_for_url(f"{base}/campaigns/*")
        assert page.get_by_role("heading", name="spring").is_visible()
        thread_row = page.get_by_role("row").filter(has_text="Spring offer")
        assert thread_row.locator(".badge").inner_text() == "human"
        page.screenshot(path=str(shots / "campaign.png"), full_page=True)

        thread_row.get_by_role("link", name="carl@ext.example").click()
        page.wait_for_url(f"{base}/threads/*")
        reply = page.locator("article.reply")
        assert reply.count() == 1
        assert reply.locator(".badge").inner_text() == "human"
        assert "Carl Client" in reply.locator("header").inner_text()
        assert reply.locator("pre.stripped").inner_text().strip() == "Yes, send me the details."
        crumbs = page.get_by_role("navigation", name="Breadcrumb")
        assert crumbs.get_by_role("link", name="spring", exact=True).is_visible()
        page.screenshot(path=str(shots / "thread.png"), full_page=True)

        page.goto(f"{base}/")
        assert page.locator("section", has_text="Replies today").locator(".badge", has_text="human").is_visible()
        for service in ("smtpd", "qmgr", "web"):
            cells = page.locator("#services tr").filter(has=page.get_by_role("rowheader", name=service,
                                                                               exact=True)).locator("td")
            assert cells.nth(1).inner_text() == "up"
            # qmgr runs one sharded queue manager per CPU; the others one worker
            assert cells.nth(2).inner_text() == str(len(m.worker_pids(service)))
            assert int(cells.nth(2).inner_text()) >= 1
            assert cells.nth(3).inner_text() == "0"
        page.get_by_text("As numbers").click()
        page.screenshot(path=str(shots / "dashboard.png"), full_page=True)
        browser.close()
    assert (shots / "thread.png").stat().st_size > 1000
