"""Browser test: Playwright driving Debian's chromium against the app served by uvicorn on 127.0.0.1.

Logs in, adds a domain and a mailbox through the forms (keyboard and clicks), checks they are
listed, and saves screenshots of the main pages (to docs/screenshots/ with UPDATE_SCREENSHOTS=1).
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import ADMIN_EMAIL, ADMIN_PASSWORD, WebEnv

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

if not Path(CHROMIUM).exists() and os.environ.get("CI") != "true":
    pytest.skip("chromium is not installed (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture
def served(web_sqlite: WebEnv) -> Iterator[tuple[WebEnv, str]]:
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(web_sqlite.client.app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    started = threading.Event()
    for _ in range(500):
        if server.started:
            started.set()
            break
        threading.Event().wait(0.01)
    assert started.is_set(), "uvicorn did not start"
    yield web_sqlite, f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


def test_login_add_domain_and_mailbox(served: tuple[WebEnv, str], shots: Path) -> None:
    web, base = served
    web.directory.tenant_add("acme", "Acme Inc.")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        page.goto(f"{base}/")
        assert page.url.startswith(f"{base}/login")
        page.screenshot(path=str(shots / "login.png"))
        page.fill("#email", ADMIN_EMAIL)
        page.fill("#password", ADMIN_PASSWORD)
        page.keyboard.press("Enter")
        page.wait_for_url(f"{base}/")
        assert page.get_by_role("heading", name="Dashboard").is_visible()

        page.get_by_role("navigation", name="Main").get_by_role("link", name="Tenants").click()
        page.get_by_role("link", name="acme", exact=True).click()
        page.fill("#d-name", "example.org")
        page.get_by_role("button", name="Add domain").click()
        page.wait_for_url(f"{base}/domains/example.org*")
        assert page.get_by_text("Domain example.org added.").is_visible()

        page.fill("#mb-local", "bob")
        page.fill("#mb-pw", "hunter2hunter2")
        page.fill("#mb-quota", "1G")
        page.get_by_role("button", name="Add mailbox").click()
        page.get_by_text("Mailbox bob@example.org created.").wait_for()
        assert page.locator("td", has_text="bob@example.org").is_visible()
        assert web.directory.mailbox_get("bob@example.org")["quota_bytes"] == 1024**3
        page.screenshot(path=str(shots / "domain.png"), full_page=True)

        page.goto(f"{base}/tenants/acme")
        assert page.get_by_role("link", name="example.org").is_visible()
        page.screenshot(path=str(shots / "tenant.png"), full_page=True)
        page.goto(f"{base}/tenants")
        page.screenshot(path=str(shots / "tenants.png"), full_page=True)
        page.goto(f"{base}/queue")
        page.screenshot(path=str(shots / "queue.png"), full_page=True)
        browser.close()
    assert (shots / "domain.png").stat().st_size > 1000
