"""rspamd's native HTTP protocol (``POST /checkv2``): the message and its envelope in, a verdict out.

The envelope travels as request headers (``IP``, ``Helo``, ``From``, ``Rcpt`` once per recipient,
``Queue-Id``, ``Hostname``, ``User``), as rspamd's protocol documentation describes; the reply is
JSON with the score, the threshold, the action rspamd chose and the symbols that fired.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx

ACTIONS = ("no action", "greylist", "add header", "rewrite subject", "soft reject", "reject")


class RspamdError(Exception):
    """rspamd could not be asked or gave no usable answer."""


@dataclass
class RspamdResult:
    action: str
    score: float
    required: float
    symbols: dict[str, float] = field(default_factory=dict)
    subject: str | None = None  # the rewritten subject rspamd proposes with "rewrite subject"
    smtp_message: str | None = None


@dataclass
class RspamdEnvelope:
    client_ip: str
    helo: str
    sender: str
    recipients: list[str]
    queue_id: str
    client_name: str = "unknown"
    user: str | None = None


def parse_result(data: object) -> RspamdResult:
    if not isinstance(data, dict) or "action" not in data or "score" not in data:
        raise RspamdError("reply without action and score")
    action = str(data["action"])
    if action not in ACTIONS:
        raise RspamdError(f"unknown action {action!r}")
    symbols = {}
    for name, sym in (data.get("symbols") or {}).items():
        if isinstance(sym, dict):
            symbols[str(name)] = float(sym.get("score", 0.0))
    messages = data.get("messages") or {}
    return RspamdResult(action=action, score=float(data["score"]), required=float(data.get("required_score", 0.0)),
                        symbols=symbols, subject=data.get("subject"),
                        smtp_message=messages.get("smtp_message") if isinstance(messages, dict) else None)


class RspamdClient:
    """One connection pool to rspamd's normal worker (``mx.rspamd_url``, e.g. http://127.0.0.1:11333)."""

    def __init__(self, url: str, timeout: float, password: str = "") -> None:
        self.url = url.rstrip("/") + "/checkv2"
        self.timeout = timeout
        self.password = password
        self._client: httpx.AsyncClient | None = None

    async def check(self, message: bytes, env: RspamdEnvelope) -> RspamdResult:
        headers: list[tuple[str, str]] = [("IP", env.client_ip), ("Queue-Id", env.queue_id), ("From", env.sender),
                                          ("MTA-Name", "dovetail")]
        if env.helo:
            headers.append(("Helo", env.helo))
        if env.client_name and env.client_name != "unknown":
            headers.append(("Hostname", env.client_name))
        if env.user:
            headers.append(("User", env.user))
        if self.password:
            headers.append(("Password", self.password))
        headers += [("Rcpt", r) for r in env.recipients]
        encoded = [(k.encode(), v.encode("utf-8", "surrogateescape")) for k, v in headers]
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout, trust_env=False)
        try:
            resp = await self._client.post(self.url, content=message, headers=encoded)
        except httpx.TimeoutException as exc:
            raise RspamdError("timed out") from exc
        except httpx.HTTPError as exc:
            raise RspamdError(str(exc) or type(exc).__name__) from exc
        if resp.status_code != 200:
            raise RspamdError(f"HTTP {resp.status_code}")
        try:
            return parse_result(resp.json())
        except (ValueError, TypeError) as exc:
            raise RspamdError(f"bad reply: {exc}") from exc

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
