"""Blocking work stays off the web server's event loop: password checks, sessions, database queries."""

from __future__ import annotations

import asyncio
import inspect
import re
import threading
from typing import Any

import pytest
from fastapi.routing import APIRoute

from dovetail.web import auth

from .conftest import ADMIN_EMAIL, ADMIN_PASSWORD, WebEnv

# Async endpoints that hand their blocking work to a thread themselves (asyncio.to_thread).
OFFLOADING = {"send_message", "send_batch"}


def _on_a_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def test_the_login_password_check_runs_in_a_thread_without_an_event_loop(
        web: WebEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, bool]] = []
    real = auth.check_login

    def recording(*args: Any, **kwargs: Any) -> Any:  # the real check, with where it ran written down
        calls.append((threading.get_ident(), _on_a_loop()))
        return real(*args, **kwargs)

    monkeypatch.setattr(auth, "check_login", recording)
    c = web.client
    c.get("/login")
    r = c.post("/login", data={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "next": "/",
                               "csrf": c.cookies.get("dovetail_login_csrf")}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"
    assert len(calls) == 1
    ident, on_loop = calls[0]
    assert not on_loop, "the Argon2 verification ran on the event loop"
    assert ident != threading.get_ident()
    assert c.get("/", follow_redirects=False).status_code == 200  # the session it made works


def test_no_route_or_error_handler_blocks_the_loop(web: WebEnv) -> None:
    """Every async endpoint either awaits only I/O or is known to hand its work to a thread."""
    app = web.client.app
    async_routes = {r.name for r in app.routes if isinstance(r, APIRoute)
                    and inspect.iscoroutinefunction(r.endpoint)}
    assert async_routes <= OFFLOADING, f"async routes doing blocking work on the loop: {async_routes - OFFLOADING}"
    handlers = {getattr(h, "__name__", repr(h)) for h in app.exception_handlers.values()
                if inspect.iscoroutinefunction(h)}
    handlers.discard("websocket_request_validation_exception_handler")  # FastAPI's own; no websockets here
    assert handlers == set(), f"async error handlers (their error pages query the session): {handlers}"
    for route in app.routes:
        if isinstance(route, APIRoute):
            for dep in route.dependant.dependencies:
                if dep.call is not None and inspect.iscoroutinefunction(dep.call):
                    assert dep.call.__name__ == "posted_form", (route.path, dep.call)


def test_a_form_post_is_checked_and_applied_from_the_threadpool(web: WebEnv) -> None:
    c = web.client
    c.get("/login")
    c.post("/login", data={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "next": "/",
                           "csrf": c.cookies.get("dovetail_login_csrf")}, follow_redirects=False)
    page = c.get("/tenants").text


    token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    assert c.post("/tenants", data={"name": "acme", "csrf": "forged"}, follow_redirects=False).status_code == 403
    r = c.post("/tenants", data={"name": "acme", "csrf": token}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/tenants/acme?")
    assert "acme" in [t["name"] for t in web.directory.tenant_list()]
