"""Browser test of the outbound pages: Chromium (through Playwright) adds a transport and rotates a
domain's DKIM keys through the forms, and sees each result on the page and in the store."""

from __future__ import annotations

from pathlib import Path

from dovetail.outbound.keys import DkimKeys
from dovetail.outbound.transports import Transports

from .conftest import ADMIN_EMAIL, ADMIN_PASSWORD, WebEnv
from .test_browser import ARGS, CHROMIUM, served, sync_api  # noqa: F401 - served is a fixture

__all__ = ["served"]


def test_add_a_transport_and_rotate_dkim_keys(served: tuple[WebEnv, str], shots: Path) -> None:
    web, base = served
    web.directory.tenant_add("acme")
    web.directory.domain_add("acme.test", "acme")
    store = DkimKeys(web.engine, web.cfg.data_dir / "dkim")
    first = {k.selector for k in store.ensure("acme.test")}
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(f"{base}/login")
        page.fill("#email", ADMIN_EMAIL)
        page.fill("#password", ADMIN_PASSWORD)
        page.keyboard.press("Enter")
        page.wait_for_url(f"{base}/")

        page.get_by_role("navigation", name="Main").get_by_role("link", name="Outbound").click()
        page.wait_for_url(f"{base}/transports")
        page.select_option("#tr-rule", "domain")
        page.fill("#tr-match", "acme.test")
        page.fill("#tr-relay", "[127.0.0.1]:2525")
        page.select_option("#tr-tls", "none")
        page.get_by_role("button", name="Save rule").click()
        page.get_by_text("domain acme.test → relay:[127.0.0.1]:2525").wait_for()
        assert page.locator("td", has_text="relay:[127.0.0.1]:2525").is_visible()
        assert [(t.scope, t.match, t.host, t.port) for t in Transports(web.engine).list()] == [
            ("domain", "acme.test", "127.0.0.1", 2525)]

        page.get_by_role("navigation", name="Outbound").get_by_role("link", name="DKIM keys").click()
        page.wait_for_url(f"{base}/dkim")
        page.get_by_role("button", name="Rotate for acme.test").click()
        page.get_by_text("acme.test: rotated").wait_for()
        new = {k.selector for k in store.list("acme.test") if k.state == "published"}
        assert len(new) == 2 and not new & first
        for selector in new:
            assert page.locator("code", has_text=f"{selector}._domainkey.acme.test").first.is_visible()
        assert page.get_by_role("button", name="Activate published keys for acme.test").is_visible()
        page.screenshot(path=str(shots / "dkim.png"), full_page=True)

        page.get_by_role("button", name="Activate published keys for acme.test").click()
        page.get_by_text("acme.test: activated").wait_for()
        assert {k.selector for k in store.list("acme.test") if k.state == "active"} == new
        browser.close()
