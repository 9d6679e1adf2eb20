"""The List-Unsubscribe links of bulk mail: where the one-click form points, and why it may be off.

Gmail and Yahoo require bulk senders to offer RFC 8058 one-click unsubscribe: an ``https:`` URI in
List-Unsubscribe next to ``List-Unsubscribe-Post: List-Unsubscribe=One-Click``, both DKIM-signed. The URI
is ``<web.public_url>/unsubscribe/<token>``, served by the web listener (behind the operator's TLS proxy).
Without a public URL the message carries only the ``mailto:unsubscribe+<token>@`` form, which our MX
routes to the replies engine.
"""

from __future__ import annotations

from typing import Any

PATH = "/unsubscribe"


def one_click_url(public_url: str, token: str) -> str:
    """The link a mail client POSTs to: ``https://mail.example.com/unsubscribe/<token>``."""
    return f"{public_url.rstrip('/')}{PATH}/{token}"


def one_click_off_reason(values: Any) -> str | None:
    """Why bulk mail carries no one-click link (``values``: a Config or its values), or None when it does."""
    url = str(values.get("web.public_url", "") or "")
    if not url:
        return ("one-click unsubscribe (RFC 8058) is off: web.public_url is not set, so bulk mail carries only the "
                "mailto: List-Unsubscribe; set it with `dovetail config set web.public_url=https://mail.example.com`")
    if not url.lower().startswith("https://"):
        return (f"one-click unsubscribe (RFC 8058) is off: web.public_url {url!r} is not https, so bulk mail carries "
                "the link without List-Unsubscribe-Post; mail providers only honour an https link")
    return None
